"""Task-specific pieces: decoding, losses, metrics."""

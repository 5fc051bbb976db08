"""The one exception type that the command line turns into a one-line message."""


class BetterConvError(ValueError):
    """A user-facing error: bad argument, bad file, bad input size. Its message is one line."""

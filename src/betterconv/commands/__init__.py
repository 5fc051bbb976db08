"""Command-line front ends of the tasks; `betterconv.cli` assembles them."""

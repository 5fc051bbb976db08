"""The one exception type that the command line turns into a one-line message, and the one helper that makes a
one-line message out of any exception."""


class BetterConvError(ValueError):
    """A user-facing error: bad argument, bad file, bad input size. Its message is one line."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of `error`'s message (its type name when it has none), at most `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]

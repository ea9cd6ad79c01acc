"""The one exception type users see: a one-line message naming the file, key or value and what was expected."""


class MaekitError(Exception):
    """A user-facing error. The CLI prints `maekit: error: <message>` and exits with status 2."""

"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class FacelabError(Exception):
    """A problem with the user's input or environment, with a message that names the file and the fix."""

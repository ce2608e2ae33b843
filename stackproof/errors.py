"""The one exception the suite raises for a problem in the stack under test."""


class StackError(Exception):
    """A file or container of the stack is missing, unreadable or malformed.

    The message is one line and names the file or container; a check that hits it
    fails its control with that line as the reason.
    """

"""Errors that users cause, reported as one line rather than a traceback."""


class InputError(ValueError):
    """Bad input data or an out-of-range option; the CLI prints it and exits with status 2."""


class OutOfSpaceError(InputError):
    """A disk filled up while writing a store: one line naming it and the bytes it needed,
    exit status 2 like other problems the user can fix."""

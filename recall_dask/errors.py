"""Errors that users cause, reported as one line rather than a traceback."""


class InputError(ValueError):
    """Bad input data or an out-of-range option; the CLI prints it and exits with status 2."""

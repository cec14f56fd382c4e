"""Errors that end a run with one line rather than a traceback; kept free of heavy imports, as
the command line catches them."""


class InputError(ValueError):
    """Bad input data or an out-of-range option; the CLI prints it and exits with status 2."""


class CalibrationError(RuntimeError):
    """The loop ran out of iterations before every cluster pair was supported; the CLI prints it
    and exits with status 1."""


class OutOfSpaceError(InputError):
    """A disk filled up while writing a store: one line naming it and the bytes it needed,
    exit status 2 like other problems the user can fix."""

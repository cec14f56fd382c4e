"""Errors that end a run with one line rather than a traceback; kept free of heavy imports, as
the command line catches them."""


class InputError(ValueError):
    """Bad input data or an out-of-range option; the CLI prints it and exits with status 2."""


class CalibrationError(RuntimeError):
    """The loop ran out of iterations before every cluster pair was supported; the CLI prints it
    and exits with status 1."""

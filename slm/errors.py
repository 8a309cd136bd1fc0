"""Errors that the command line reports as one line, without a traceback."""


class InputError(ValueError):
    """Bad input (a config key, a file, an array) detected before any compute.

    The message names the key or file and says what was expected.
    """


class NonFiniteError(RuntimeError):
    """A loss, gradient or parameter became NaN or infinite during training."""

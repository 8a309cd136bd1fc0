"""Errors that the command line reports as one line, without a traceback."""


class InputError(ValueError):
    """Bad input (a config key, a file, an array) detected before any compute.

    The message names the key or file and says what was expected.
    """


class NonFiniteError(RuntimeError):
    """A loss, gradient or parameter became NaN or infinite during training (at optimiser step ``step``)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step

"""The one exception type for user errors: the CLI prints its message on one line and exits non-zero."""


class DiffusionCTError(Exception):
    """Bad input or settings. The message says what was wrong and what to do."""


class InputError(DiffusionCTError):
    """An input file or folder cannot be used."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable, so that an error raised on a Dask worker reaches the command intact
        return (type(self), (self.path, self.problem))

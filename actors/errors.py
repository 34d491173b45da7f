"""The one exception type users see. Messages say what to change."""


__all__ = ["ChromarayError", "InputFileError"]


class ChromarayError(Exception):
    """A user-facing error: bad argument, bad input file, impossible configuration."""


class InputFileError(ChromarayError):
    """A single input file could not be used; becomes an error row, never stops a run.

    ``stage`` names where it failed (discover, decode, features, midi, ...).
    """

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason

"""Exceptions raised at the boundaries; the CLI prints them as one line and exits non-zero."""


class SgancError(Exception):
    """Base class: the message is a complete, user-facing sentence fragment naming the problem."""


class InputError(SgancError):
    """A file, array or argument from outside is unusable (wrong shape, unreadable, missing)."""


class BitstreamError(SgancError):
    """An .sgnc file or packet is malformed: bad magic, unknown version, truncated, corrupted."""


class ModelMismatchError(SgancError):
    """A stream was made with a different model than the one loaded for decoding."""


class CheckpointError(SgancError):
    """A checkpoint or bundle is missing keys, has wrong shapes, or would run code to load."""

"""Exceptions with messages a biologist can act on: what is wrong, where, and how to fix it."""


class PhenDiffError(Exception):
    """Base class of every error napari-phendiff raises on purpose."""


class DataError(PhenDiffError, ValueError):
    """An image or a dataset folder cannot be used as it is."""


class CheckpointError(PhenDiffError, ValueError):
    """A checkpoint folder is missing, incomplete, unsafe or does not fit the request."""


class ConfigError(PhenDiffError, ValueError):
    """A setting (an option of a command, a dock or a function) is out of range or of the wrong kind."""


class PhenDiffWarning(UserWarning):
    """Something was done as asked but may not be what the user means (an input unlike the training images)."""

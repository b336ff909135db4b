"""Exceptions raised for bad input.

Every error a user can cause derives from :class:`SteelsegError`. The CLI turns one into a single
line on stderr and exit code 2, so messages must name the file or field and what was expected.
"""


class SteelsegError(Exception):
    """Root of all user-facing errors."""


class ConfigError(SteelsegError):
    """A TOML file, a CLI override or a registry name is invalid."""


class DataError(SteelsegError):
    """Raw images, masks or a Zarr store are missing, unreadable or inconsistent."""


class UnknownSplitError(DataError):
    """A split name that the store does not have (a typo, or another dataset's split)."""


class TrainingError(SteelsegError):
    """A training run cannot start or must stop (e.g. a non-finite loss)."""


class LaunchError(SteelsegError):
    """A job cannot be submitted as asked (unknown partition, too many GPUs, ...)."""

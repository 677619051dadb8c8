"""Error types that carry a message a user can act on."""

from __future__ import annotations


class TvifmError(Exception):
    """Base class of every error tvifm raises on purpose (bad input, bad config, missing data)."""


class ConfigError(TvifmError):
    """A configuration value is missing, unknown or out of range."""


class DatasetError(TvifmError):
    """A dataset on disk does not have the layout or content its loader expects."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line

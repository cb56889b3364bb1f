"""Errors a user can fix. The CLI prints them as one line (full traceback with HYDRA_FULL_ERROR=1)."""


class GanLabError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""


class ConfigError(GanLabError):
    """An invalid configuration value."""


class DataError(GanLabError):
    """A dataset that is missing, empty or unreadable."""

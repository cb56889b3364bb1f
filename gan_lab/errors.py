"""Errors a user can fix. The CLI prints them as one line (full traceback with HYDRA_FULL_ERROR=1)."""


class GanLabError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""


class ConfigError(GanLabError):
    """An invalid configuration value."""


class DataError(GanLabError):
    """A dataset that is missing, empty or unreadable."""


class WeightsUnavailable(GanLabError):
    """Pretrained weights (the metrics' Inception network) that cannot be had, or lack what is asked of them."""


def user_error(exc: BaseException) -> GanLabError | None:
    """The GanLabError behind exc, if any: Hydra's instantiate and DataLoader workers wrap the original."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GanLabError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(err: GanLabError) -> str:
    """The message as one line; an error re-raised from a DataLoader worker carries a traceback before it."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__

"""Errors a user can fix. The CLI prints them as one line (full traceback with HYDRA_FULL_ERROR=1)."""


class GanLabError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""


class ConfigError(GanLabError):
    """An invalid configuration value."""


class DataError(GanLabError):
    """A dataset that is missing, empty or unreadable."""


class WeightsUnavailable(GanLabError):
    """Pretrained weights (the metrics' Inception network) that cannot be had, or lack what is asked of them."""


def _trainer_settings_error(exc: BaseException) -> GanLabError | None:
    """Lightning's refusal of a trainer.* value (raised while building the Trainer) as a ConfigError."""
    if type(exc).__name__ != "MisconfigurationException":
        return None
    message = " ".join(str(exc).split())
    if "gpu backend" in message.lower() or "cuda" in message.lower():
        return ConfigError(
            f"trainer.accelerator asks for a GPU, but none is usable here ({message}); "
            "use trainer.accelerator=auto (a GPU if present, else the CPU) or trainer.accelerator=cpu"
        )
    return ConfigError(f"Lightning refused the trainer settings: {message}; fix the trainer.* value it names")


# Exceptions of the libraries gan_lab builds on that are a user's input in disguise, mapped in this one place.
THIRD_PARTY_USER_ERRORS = (_trainer_settings_error,)


def user_error(exc: BaseException) -> GanLabError | None:
    """The GanLabError behind exc, if any (Hydra's instantiate and DataLoader workers wrap the original), or a
    library's exception that THIRD_PARTY_USER_ERRORS recognizes as bad input."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GanLabError):
            return exc
        for as_user_error in THIRD_PARTY_USER_ERRORS:
            if (mapped := as_user_error(exc)) is not None:
                return mapped
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(err: GanLabError) -> str:
    """The message as one line; an error re-raised from a DataLoader worker carries a traceback before it."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__

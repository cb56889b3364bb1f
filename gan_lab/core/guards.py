"""The divergence guard: a NaN or infinite loss or weight stops the run, naming the step, and is never saved.

The guard knows nothing of checkpoints: the entry point, which does, adds what was kept (`Diverged.kept`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError

DIVERGED_FIX = (
    "lower optim.lr or stabilise D (normalization=spectral, regularizer=gradient_penalty), "
    "then resume=<checkpoint> or start again"
)


class Diverged(GanLabError):
    """A loss or a weight became NaN or infinite: `what` diverged, at which step; `kept`, where given, says what
    the run saved before it (e.g. "the last good checkpoint is kept: <path>"), and goes before the fix."""

    def __init__(self, what: str, kept: str | None = None) -> None:
        self.what, self.kept = what, kept
        super().__init__("; ".join([f"training diverged: {what}", *([kept] if kept else []), DIVERGED_FIX]))

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        return type(self), (self.what, self.kept)  # pickled (a launcher's failed job) as it was made


class FiniteWatch:
    """The first non-finite loss of a run as (seen, is_generator, g_step, d_step, value), kept on the device so
    watching costs no host sync; read when metrics are written and before every checkpoint."""

    def __init__(self) -> None:
        self.first: Tensor | None = None

    def watch(self, loss: Tensor, is_generator: bool, g_step: int, d_step: int) -> None:
        """Remember the first step whose loss (a scalar) is NaN or infinite, without a host sync."""
        loss = loss.detach().double()
        record = torch.stack(
            [torch.ones_like(loss), torch.full_like(loss, float(is_generator)),
             torch.full_like(loss, g_step), torch.full_like(loss, d_step), loss]
        )  # fmt: skip
        if self.first is None:
            self.first = torch.zeros_like(record)
        keep = (self.first[0] > 0) | torch.isfinite(loss)
        self.first = torch.where(keep, self.first, record)

    def problem(self) -> str | None:
        """The first non-finite loss and its step, or None (one host sync)."""
        if self.first is None or not self.first[0] > 0:
            return None
        _, is_generator, g_step, d_step, value = self.first.tolist()
        which = "g_loss" if is_generator else "d_loss (with penalty)"
        return f"{which}={value} at generator step {int(g_step)} (discriminator step {int(d_step)})"


def check_finite(watch: FiniteWatch, nets: Mapping[str, nn.Module]) -> None:
    """Raise Diverged, naming the step and values, if a loss or a weight of `nets` ({name: net}) has become NaN
    or infinite."""
    problems = [problem] if (problem := watch.problem()) else []
    for name, net in nets.items():
        weights = list(net.named_parameters())
        # One host sync per net, not one per weight.
        finite = torch.stack([torch.isfinite(p).all() for _, p in weights]).tolist() if weights else []
        bad = [n for (n, _), ok in zip(weights, finite, strict=True) if not ok]
        if bad:
            problems.append(
                f"non-finite {name} weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
            )
    if problems:
        raise Diverged("; ".join(problems))

"""Running means of per-step training values between two metrics rows, summed on the device (no host sync until
a row is written) and kept in checkpoints, so a resumed run writes the rows an unbroken run writes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class RunningMeans:
    def __init__(self) -> None:
        self._sums: dict[str, tuple[Tensor | float, int]] = {}

    def add(self, **values: Tensor) -> None:
        for name, value in values.items():
            total, count = self._sums.get(name, (0.0, 0))
            self._sums[name] = (total + value.detach().float(), count + 1)

    def means(self) -> dict[str, Tensor]:
        """{name: mean since the last clear()}, still on the device."""
        return {name: total / count for name, (total, count) in self._sums.items()}  # type: ignore[misc]

    def clear(self) -> None:
        self._sums.clear()

    def state(self) -> dict[str, Any]:
        return {name: (torch.as_tensor(total).cpu(), count) for name, (total, count) in self._sums.items()}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self._sums = {name: (total.to(device), count) for name, (total, count) in state.items()}

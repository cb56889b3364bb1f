"""`EveryNGeneratorSteps`: the base of the callbacks that act once every N generator steps."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


def generator_steps(trainer: pl.Trainer, module: pl.LightningModule) -> int:
    """GANModule.g_steps; Lightning's global_step (every optimizer step) for any other module."""
    steps = getattr(module, "g_steps", None)
    return trainer.global_step if steps is None else steps


class EveryNGeneratorSteps(pl.Callback):
    """Calls `on_every(trainer, module)` once at each generator step that is a positive multiple of every_n_steps.

    Lightning's global_step counts D and G optimizer steps, so the period is in GANModule.g_steps. With
    n_critic > 1, g_steps stays put over the D-only batches in between: `run_once` acts once per generator
    step, the same guard a subclass's own extra calls (at epoch or training end) go through. Step 0 (nothing
    trained yet) never triggers; a module without g_steps never triggers the periodic call.

    Hooks: `enabled()` switches the periodic call off; `last_run_step()` is the step it last ran at, which
    a subclass whose saved state already records it (so a resumed run does not repeat its checkpoint's
    step) can read from there. `last_step` starts at -1: a subclass may save it in its state_dict.
    """

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self.last_step = -1  # the generator step of the last on_every that returned (-1: none yet)

    def on_every(self, trainer: pl.Trainer, module: pl.LightningModule) -> Any:
        """The work, at most once per generator step."""
        raise NotImplementedError

    def enabled(self) -> bool:
        return True

    def last_run_step(self) -> int:
        return self.last_step

    def run_once(self, trainer: pl.Trainer, module: pl.LightningModule) -> Any:
        """on_every's result, or None when it already ran at this generator step."""
        step = generator_steps(trainer, module)
        if step == self.last_run_step():
            return None
        result = self.on_every(trainer, module)
        self.last_step = step  # after: work that raised did not happen
        return result

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        step = getattr(module, "g_steps", 0)
        if self.enabled() and step > 0 and step % self.every_n_steps == 0:
            self.run_once(trainer, module)

"""Speed settings (issue 7) change speed, not results: channels_last, fused Adam, bf16 autocast, torch.compile."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

from gan_lab.core.optim import build_optimizer
from gan_lab.train import train
from gan_lab.utils import precision
from gan_lab.utils.config import compose_config
from gan_lab.utils.precision import resolve_precision

FP32 = [*TINY_RUN, "trainer.precision=32-true", "model.width=8"]
# bf16-mixed against fp32 from the same seed, D and G losses of every step (losses are ~0.7-1.5). Measured
# 2026-11-26 (AVX-512-bf16 CPU): 5e-5 after the first step, at most 1.2e-3 over 20 steps.
BF16_FIRST_STEP_GAP = 0.005
BF16_RUN_GAP = 0.02


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa if sa[k].is_floating_point())


def _losses(run: Path) -> list[tuple[float, float]]:
    """(D loss, G loss) of every generator step, from the run's metrics.csv."""
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/g_loss")]
    return [(float(r["train/d_loss"]), float(r["train/g_loss"])) for r in rows]


def _max_loss_gap(a: Path, b: Path) -> float:
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) > 0
    return max(abs(x - y) for pa, pb in zip(la, lb, strict=True) for x, y in zip(pa, pb, strict=True))


def test_channels_last_gives_the_same_training_up_to_rounding(tmp_path) -> None:
    steps = [*FP32, "steps=6", "trainer.log_every_n_steps=1"]
    plain = train(compose_config([*steps, "speed.channels_last=false"], output_dir=tmp_path / "a"))
    nhwc = train(compose_config([*steps, "speed.channels_last=true"], output_dir=tmp_path / "b"))
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in nhwc.discriminator.parameters())  # fmt: skip
    assert not any(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in plain.discriminator.parameters()
    )
    assert _max_loss_gap(tmp_path / "a", tmp_path / "b") < 1e-4  # every step's losses, not just the end
    assert _max_difference(plain, nhwc) < 1e-4  # convolution algorithms differ in rounding only


def test_fused_adam_is_picked_and_matches_the_loop() -> None:
    torch.manual_seed(0)
    weights = [torch.randn(16, 8, requires_grad=True), torch.randn(8, requires_grad=True)]
    copies = [w.detach().clone().requires_grad_(True) for w in weights]
    config = {"_target_": "torch.optim.Adam", "lr": 1e-2, "betas": [0.5, 0.999], "fused": None}
    fused = build_optimizer(config, weights, 1e-2)
    loop = build_optimizer({**config, "fused": False}, copies, 1e-2)
    assert fused.defaults["fused"] is True and loop.defaults["fused"] is False
    for step in range(5):
        for params, opt in ((weights, fused), (copies, loop)):
            opt.zero_grad()
            (params[0].sin().sum() * (step + 1) + params[1].square().sum()).backward()
            opt.step()
    for w, c in zip(weights, copies, strict=True):
        torch.testing.assert_close(w, c, rtol=1e-6, atol=1e-6)


def test_precision_auto_picks_bf16_only_where_it_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("32-true") == "32-true" and resolve_precision("bf16-mixed") == "bf16-mixed"
    monkeypatch.setattr(precision, "fast_bf16_available", lambda accelerator="auto": True)
    assert resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(precision, "fast_bf16_available", lambda accelerator="auto": False)
    assert resolve_precision("auto") == "32-true"


class _ConvDtypes:
    """A forward hook that records the dtype of a module's outputs."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seen: set[torch.dtype] = set()
        module.register_forward_hook(lambda _m, _i, out: self.seen.add(out.dtype))


def test_bf16_autocast_changes_outputs_only_at_bf16_precision(tmp_path) -> None:
    """The same weights under bf16 autocast: D logits within bf16 rounding of fp32 (D in eval mode, so spectral
    norm does not iterate between the two calls), and convolutions really run in bf16."""
    module = train(compose_config([*FP32, "steps=2"], output_dir=tmp_path / "run"))
    module.discriminator.eval()
    torch.manual_seed(0)
    images = module.generate(torch.randn(16, module.z_dim)).contiguous(memory_format=torch.channels_last)
    first_conv = next(m for m in module.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = _ConvDtypes(first_conv)
    with torch.no_grad():
        full = module.discriminator(images, None)
        assert module.discriminator(images, None).equal(full)  # eval mode: deterministic
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = module.discriminator(images, None).float()
    assert dtypes.seen == {torch.float32, torch.bfloat16}
    assert not torch.equal(full, half)
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05 * full.abs().max().item())


def test_bf16_training_follows_fp32_training_step_by_step(tmp_path, monkeypatch) -> None:
    """20 steps from the same seed: bf16-mixed losses stay near fp32's, and bf16 really ran inside the step."""
    import gan_lab.build as build

    steps = [*TINY_RUN, "model.width=8", "steps=20", "trainer.log_every_n_steps=1"]
    train(compose_config([*steps, "trainer.precision=32-true"], output_dir=tmp_path / "fp32"))
    seen: set[torch.dtype] = set()
    build_module = build.build_module

    def build_and_watch(cfg):  # a hook on D's first convolution, inside the real training step
        module = build_module(cfg)
        conv = next(m for m in module.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        return module

    monkeypatch.setattr(build, "build_module", build_and_watch)
    bf16 = train(compose_config([*steps, "trainer.precision=bf16-mixed"], output_dir=tmp_path / "bf16"))
    assert bf16.trainer.precision == "bf16-mixed" and torch.bfloat16 in seen
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # mixed: weights and optimizer stay fp32
    fp32_losses, bf16_losses = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    first = max(abs(a - b) for a, b in zip(fp32_losses[0], bf16_losses[0], strict=True))
    assert first < BF16_FIRST_STEP_GAP  # one step: bf16 rounding only
    assert 0 < _max_loss_gap(tmp_path / "fp32", tmp_path / "bf16") < BF16_RUN_GAP  # bf16 rounding, no runaway


@pytest.mark.slow
def test_compile_keeps_checkpoint_names_and_results(tmp_path) -> None:
    steps = [*FP32, "steps=3", "trainer.log_every_n_steps=1"]
    eager = train(compose_config(steps, output_dir=tmp_path / "eager"))
    compiled = train(compose_config([*steps, "speed.compile=true"], output_dir=tmp_path / "compiled"))
    for net in (compiled.generator, compiled.discriminator):
        assert net._compiled_call_impl is not None  # nn.Module.compile ran on G and D
    assert eager.generator._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes
    assert _max_loss_gap(tmp_path / "eager", tmp_path / "compiled") < 1e-4
    assert _max_difference(eager, compiled) < 1e-4

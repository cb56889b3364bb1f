"""Speed settings (issue 7) change speed, not results: channels_last, fused Adam, bf16 autocast, torch.compile."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_RUN

from gan_lab import precision
from gan_lab.config import compose_config
from gan_lab.module import build_optimizer
from gan_lab.precision import resolve_precision
from gan_lab.train import train

FP32 = [*TINY_RUN, "trainer.precision=32-true", "model.width=8"]


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa if sa[k].is_floating_point())


def test_channels_last_gives_the_same_training_up_to_rounding(tmp_path) -> None:
    plain = train(compose_config([*FP32, "steps=6", "speed.channels_last=false"], output_dir=tmp_path / "a"))
    nhwc = train(compose_config([*FP32, "steps=6", "speed.channels_last=true"], output_dir=tmp_path / "b"))
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in nhwc.discriminator.parameters())  # fmt: skip
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


def test_bf16_autocast_changes_outputs_only_at_bf16_precision(tmp_path) -> None:
    """The same weights under bf16 autocast: D logits within bf16 rounding of fp32, and training runs bf16."""
    module = train(compose_config([*FP32, "steps=2"], output_dir=tmp_path / "run"))
    torch.manual_seed(0)
    images = module.generate(torch.randn(16, module.z_dim)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        full = module.discriminator(images, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = module.discriminator(images, None).float()
    assert not torch.equal(full, half)
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05 * full.abs().max().item())
    bf16 = train(
        compose_config([*TINY_RUN, "steps=2", "trainer.precision=bf16-mixed"], output_dir=tmp_path / "b")
    )
    assert bf16.trainer.precision == "bf16-mixed"
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # mixed: weights and optimizer stay fp32


@pytest.mark.slow
def test_compile_keeps_checkpoint_names_and_results(tmp_path) -> None:
    eager = train(compose_config([*FP32, "steps=3"], output_dir=tmp_path / "eager"))
    compiled = train(
        compose_config([*FP32, "steps=3", "speed.compile=true"], output_dir=tmp_path / "compiled")
    )
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes
    assert _max_difference(eager, compiled) < 1e-4

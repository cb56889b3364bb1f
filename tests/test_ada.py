"""ADA (gan_lab.core.ada): the ops against known answers, the p update rule against known numbers, no host sync,
state_dict round trips, the augment op protocol and conf/augment/ada.yaml."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import HostRoundTrips
from hydra.utils import instantiate
from omegaconf import OmegaConf

import gan_lab.core.ada as ada
from gan_lab.core.ada import ADA_OPS, AdaptiveAugment, scale_by
from gan_lab.core.augment import Augmentations, CutMix
from gan_lab.errors import ConfigError
from gan_lab.utils.config import CONF_DIR, compose_config


def images(n: int = 8, size: int = 16, seed: int = 0, width: int | None = None) -> torch.Tensor:
    """(n, 3, size, width) random images in [-1, 1]: no symmetry, so every flip or rotation changes them."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, width or size, generator=g) * 2 - 1


def fixed(ops, p: float) -> AdaptiveAugment:
    return AdaptiveAugment(p=p, adjust=False, ops=ops)


# --- the ops --------------------------------------------------------------------------------------------------
def test_p_zero_is_the_identity_with_identity_gradient():
    torch.manual_seed(0)
    x = images().requires_grad_()
    out = AdaptiveAugment(p=0.0)(x)
    assert torch.equal(out, x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))


def test_flip_at_p_one_is_the_mirror_image():
    x = images()
    assert torch.equal(fixed(["flip"], 1.0)(x), x.flip(3))


def test_rotate90_at_p_one_gives_one_of_the_three_rotations_each():
    torch.manual_seed(0)
    x = images(n=64)
    out = fixed(["rotate90"], 1.0)(x)
    ks = []
    for image, source in zip(out, x, strict=True):
        matches = [k for k in (1, 2, 3) if torch.equal(image, source.rot90(k, (1, 2)))]
        assert len(matches) == 1
        ks += matches
    assert set(ks) == {1, 2, 3}


def test_rotate90_refuses_non_square_images():
    with pytest.raises(ConfigError, match="square"):
        fixed(["rotate90"], 1.0)(images(size=8, width=12))
    assert fixed(["flip", "scale"], 1.0)(images(size=8, width=12)).shape == (
        8,
        3,
        8,
        12,
    )  # others do not care


def test_each_op_applies_to_a_share_p_of_the_images():
    torch.manual_seed(0)
    n, p = 4000, 0.3
    x = images(n=n, size=4)
    out = fixed(["flip"], p)(x)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # each image flipped or kept, never both (no symmetric images)
    assert abs(flipped.float().mean().item() - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_each_draw_of_color_is_its_own(monkeypatch):
    """ "color" is brightness, saturation and contrast, each drawn with probability p on its own."""
    torch.manual_seed(0)
    calls = []
    fns = [lambda x, i=i: (calls.append(i), x + 10.0**i)[1] for i in range(3)]
    monkeypatch.setitem(ADA_OPS, "color", tuple(fns))  # restored after the test
    n, p = 4000, 0.5
    out = fixed(["color"], p)(torch.zeros(n, 1, 1, 1)).flatten()
    digits = torch.stack([(out // 10**i) % 10 for i in range(3)], 1)  # which of +1, +10, +100 were applied
    share = digits.mean(0)
    assert calls == [0, 1, 2]
    assert (share - p).abs().max() < 4.5 * math.sqrt(p * (1 - p) / n)
    both = (digits[:, 0] * digits[:, 1]).mean()  # independent draws: P(both) = p^2, not p
    assert abs(both - p * p) < 0.05


def test_scale_by_one_changes_nothing():
    x = images()
    assert torch.allclose(scale_by(x, torch.ones(8)), x, atol=1e-5, rtol=0)


def test_scale_at_p_one_with_unit_factors_changes_nothing(monkeypatch):
    monkeypatch.setattr(ada, "SCALE_STD", 0.0)  # exp(0 * randn) = 1
    x = images()
    assert torch.allclose(fixed(["scale"], 1.0)(x), x, atol=1e-5, rtol=0)


def test_scale_by_two_zooms_into_the_centre():
    size = 8
    centre = (size - 1) / 2
    rows = torch.arange(size, dtype=torch.float32)[:, None] - centre
    cols = torch.arange(size, dtype=torch.float32)[None, :] - centre
    ramp = (0.1 * cols - 0.05 * rows).expand(2, 3, size, size)
    # Bilinear sampling is exact on a linear ramp: doubling about the centre halves its slopes.
    assert torch.allclose(scale_by(ramp, torch.full((2,), 2.0)), ramp / 2, atol=1e-6, rtol=0)
    # Any image: the centre crop upsampled by 2 (interpolate clamps at the crop's border, so compare inside).
    x = images(size=size)
    crop = x[:, :, size // 4 : size // 4 + size // 2, size // 4 : size // 4 + size // 2]
    zoomed = F.interpolate(crop, scale_factor=2, mode="bilinear", align_corners=False)
    out = scale_by(x, torch.full((8,), 2.0))
    assert torch.allclose(out[..., 1:-1, 1:-1], zoomed[..., 1:-1, 1:-1], atol=1e-6, rtol=0)
    assert not torch.allclose(out, x, atol=0.1)


def test_scale_down_reflects_the_border():
    """Zooming out reads outside the image: reflected, a constant image stays constant (zeros would darken it)."""
    x = torch.full((2, 3, 8, 8), 0.7)
    assert torch.allclose(scale_by(x, torch.full((2,), 0.5)), x, atol=1e-6, rtol=0)


def test_scale_draws_lognormal_factors(monkeypatch):
    torch.manual_seed(0)
    seen = []
    monkeypatch.setattr(ada, "scale_by", lambda x, factors: (seen.append(factors), x)[1])
    fixed(["scale"], 1.0)(images(n=4000, size=2))
    logs = seen[0].log()
    assert abs(logs.mean()) < 0.01 and abs(logs.std() - 0.2 * math.log(2)) < 0.005


@pytest.mark.parametrize("op", list(ADA_OPS))
def test_every_op_at_p_one_passes_gradients_and_keeps_shape(op):
    torch.manual_seed(0)
    x = images().requires_grad_()
    out = fixed([op], 1.0)(x)
    assert (out.shape, out.dtype) == (x.shape, x.dtype)
    assert not torch.equal(out, x)
    (grad,) = torch.autograd.grad((out * torch.randn(out.shape)).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_seeding_reproduces_the_augmentations():
    op = AdaptiveAugment(p=0.5)
    torch.manual_seed(3)
    first = op(images())
    torch.manual_seed(3)
    assert torch.equal(op(images()), first)


# --- the update rule --------------------------------------------------------------------------------------------
def ramped(**kwargs) -> AdaptiveAugment:
    return AdaptiveAugment(**{"interval": 4, "ramp_images": 3200, **kwargs})


def observe_steps(op: AdaptiveAugment, sign: float, steps: int = 4, batch: int = 32) -> None:
    for _ in range(steps):
        op.observe(torch.full((batch, 1), sign))


def test_p_rises_by_batch_times_interval_over_ramp_while_reals_score_above_target():
    op = ramped()
    step = torch.tensor(32 * 4 / 3200)  # 0.04 in float32
    expected = torch.zeros(())
    for _ in range(3):
        observe_steps(op, 1.0)
        op.adjust(32)
        expected += step
        assert torch.equal(op.p, expected)
    assert torch.equal(op.p, torch.tensor(0.04) * 3)


def test_p_falls_while_reals_score_below_target_and_stops_at_zero():
    op = ramped(p=0.05)
    observe_steps(op, -1.0)
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.05) - torch.tensor(0.04))
    observe_steps(op, -1.0)
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.0))


def test_p_stops_at_one():
    op = ramped(p=0.98)
    observe_steps(op, 1.0)
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(1.0))


def test_r_t_on_the_target_leaves_p():
    op = ramped(p=0.5, target=0.6)
    op.observe(torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0]))  # r_t = 3 / 5 = the target: sign 0
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.5))
    op.observe(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0]))  # r_t = 1 / 4 < 0.6
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.5) - torch.tensor(0.04))


def test_no_observations_leave_p():
    op = ramped(p=0.5)
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.5))


def test_r_t_counts_every_sign_since_the_last_adjust():
    op = ramped(p=0.5, target=0.6)
    op.observe(torch.ones(3))
    op.observe(-torch.ones(2))  # together r_t = 1/5 < 0.6; the last batch alone would say 1 > 0.6
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.5) - torch.tensor(0.04))


def test_adjust_false_keeps_p_and_resets_the_accumulators():
    op = ramped(p=0.3, adjust=False)
    observe_steps(op, 1.0)
    assert (op.sign_sum.item(), op.sign_count.item()) == (128.0, 128.0)
    op.adjust(32)
    assert torch.equal(op.p, torch.tensor(0.3))
    assert (op.sign_sum.item(), op.sign_count.item()) == (0.0, 0.0)


def test_adjust_resets_the_accumulators_and_keeps_the_buffers_storage():
    op = ramped()
    pointers = [buf.data_ptr() for buf in (op.p, op.sign_sum, op.sign_count)]
    op.observe(torch.tensor([[1.0], [-1.0], [1.0]]))
    assert (op.sign_sum.item(), op.sign_count.item()) == (1.0, 3.0)
    op.adjust(8)
    assert (op.sign_sum.item(), op.sign_count.item()) == (0.0, 0.0)
    assert [
        buf.data_ptr() for buf in (op.p, op.sign_sum, op.sign_count)
    ] == pointers  # CUDA graphs read these


def test_forward_reads_the_adjusted_p():
    op = ramped(p=0.0, ops=["flip"], ramp_images=128)  # one adjust takes p from 0 to 1
    x = images()
    assert torch.equal(op(x), x)
    observe_steps(op, 1.0)
    op.adjust(32)
    assert torch.equal(op(x), x.flip(3))


def test_no_host_round_trips():
    op = AdaptiveAugment(p=0.5)
    x = images().requires_grad_()
    logits = torch.randn(8, 1)
    with HostRoundTrips() as seen:
        out = op(x)
        out.sum().backward()
        op.observe(torch.sign(logits - 0.0))
        op.adjust(8)
    assert seen == []
    assert x.grad is not None


def test_images_on_another_device_than_p_are_refused():
    op = AdaptiveAugment(p=0.5)
    with pytest.raises(RuntimeError, match=r"\.to\(\)"):
        op(images().to("meta"))


# --- state -------------------------------------------------------------------------------------------------------
def test_state_dict_round_trip():
    op = ramped(p=0.1)
    observe_steps(op, 1.0)
    op.adjust(32)
    op.observe(torch.tensor([1.0, -1.0, -1.0]))
    state = op.state_dict()
    assert set(state) == {"p", "sign_sum", "sign_count"}
    fresh = ramped()
    fresh.load_state_dict(state)
    for name in ("p", "sign_sum", "sign_count"):
        assert torch.equal(getattr(fresh, name), getattr(op, name))
    assert torch.equal(fresh.p, torch.tensor(0.1) + torch.tensor(0.04))
    assert (fresh.sign_sum.item(), fresh.sign_count.item()) == (-1.0, 3.0)


def test_moves_keep_the_buffers():
    op = AdaptiveAugment(p=0.25).to(torch.float64)
    assert {name for name, _ in op.named_buffers()} == {"p", "sign_sum", "sign_count"}
    assert op.p.dtype == torch.float64 and op.p.item() == 0.25
    op.to("meta")
    assert op.p.device.type == "meta" and dict(op.named_buffers())["p"] is op.p


# --- protocol, settings and config ---------------------------------------------------------------------------------
def test_plugs_into_augmentations_as_an_all_op():
    op = AdaptiveAugment(p=1.0, adjust=False, ops=["flip"])
    assert AdaptiveAugment.target == "all" and op.target == "all" and op.rt_target == 0.6
    augment = Augmentations([op])
    assert augment.all_ops == [op] and augment.real_ops == []
    x = images()
    assert torch.equal(augment.real(x), x.flip(3)) and torch.equal(augment.fake(x), x.flip(3))


def test_repr_gives_the_settings():
    text = repr(AdaptiveAugment(p=0.1, target=0.7, interval=2, ramp_images=1000, ops=["flip", "cutout"]))
    assert "p=0.1, target=0.7, interval=2, ramp_images=1000, adjust=True, ops=['flip', 'cutout']" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 1.5}, r"augment\.ada\.p must be in \[0, 1\]"),
        ({"p": float("nan")}, r"augment\.ada\.p"),
        ({"target": 1.0}, r"augment\.ada\.target must be in \(0, 1\)"),
        ({"target": 0.0}, r"augment\.ada\.target"),
        ({"interval": 0}, r"augment\.ada\.interval must be an integer >= 1"),
        ({"interval": 2.5}, r"augment\.ada\.interval"),
        ({"ramp_images": 0}, r"augment\.ada\.ramp_images must be > 0"),
        (
            {"ops": ["flip", "hue"]},
            r"unknown op 'hue'; valid ops: flip, rotate90, translation, scale, color, cutout",
        ),
        ({"ops": ["flip", "flip"]}, r"'flip' named more than once"),
    ],
)
def test_bad_settings_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        AdaptiveAugment(**kwargs)
    assert "\n" not in str(caught.value)


def test_ops_as_a_comma_separated_string():
    assert AdaptiveAugment(ops="flip, cutout").ops == ("flip", "cutout")


def test_yaml_has_the_papers_defaults():
    node = OmegaConf.load(CONF_DIR / "augment" / "ada.yaml")
    assert list(node) == ["ada"]  # one named entry, so several merge into the augment node
    assert OmegaConf.to_container(node.ada) == {
        "_target_": "gan_lab.core.ada.AdaptiveAugment",
        "p": 0.0,
        "target": 0.6,
        "interval": 4,
        "ramp_images": 500000,
        "adjust": True,
        "ops": ["flip", "rotate90", "translation", "scale", "color", "cutout"],
    }


def test_augment_ada_composes(tmp_path):
    cfg = compose_config(["augment=ada", "augment.ada.target=0.7"], output_dir=tmp_path)
    op = instantiate(cfg.augment)["ada"]
    assert type(op) is AdaptiveAugment
    assert (op.initial_p, op.rt_target, op.interval, op.ramp_images, op.adaptive) == (
        0.0,
        0.7,
        4,
        500000,
        True,
    )
    assert op.ops == ("flip", "rotate90", "translation", "scale", "color", "cutout")
    assert op.p.item() == 0.0
    augment = Augmentations(instantiate(cfg.get("augment")))
    assert [type(o) for o in augment.all_ops] == [AdaptiveAugment] and augment.real_ops == []


def test_augment_ada_with_cutmix_composes(tmp_path):
    cfg = compose_config(["augment=[ada,cutmix]"], output_dir=tmp_path)
    augment = Augmentations(instantiate(cfg.get("augment")))
    assert [type(o) for o in augment.real_ops] == [CutMix]
    assert [type(o) for o in augment.all_ops] == [AdaptiveAugment]


# --- in training (GANModule) ----------------------------------------------------------------------------------
def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if not k.startswith("adaptive_augment.")}


def test_p_pinned_at_zero_trains_exactly_like_no_augmentation(tiny_config):
    """With p = 0 a D step and a G step give exactly the unaugmented values (ADA only draws more random numbers,
    after the step's own noise: the next step's noise differs, so each step is compared from the same RNG state)."""
    from gan_lab.build import build_module
    from gan_lab.train import train

    plain = train(tiny_config("steps=1", "trainer.precision=32-true"))
    pinned = train(
        tiny_config("steps=1", "trainer.precision=32-true", "augment=ada", "augment.ada.adjust=false")
    )
    assert pinned.adaptive_augment is not None and pinned.adaptive_augment.p.item() == 0.0
    a, b = _state(plain.discriminator), _state(pinned.discriminator)  # after one D step (the G step leaves D)
    assert all(torch.equal(a[k], b[k]) for k in a)

    g_losses, g_grads = [], []
    for augment in ("none", "ada"):
        torch.manual_seed(0)  # the same initial weights
        module = build_module(
            tiny_config("augment=" + augment, "augment.ada.adjust=false" if augment == "ada" else "steps=1")
        )
        module.manual_backward = lambda loss: loss.backward()
        opt_g = torch.optim.SGD(module.generator.parameters(), lr=0.0)
        torch.manual_seed(5)
        g_losses.append(module._generator_update(opt_g, 8))
        g_grads.append([p.grad.clone() for p in module.generator.parameters()])
    assert torch.equal(*g_losses)
    assert all(torch.equal(x, y) for x, y in zip(*g_grads, strict=True))


@pytest.mark.slow  # ~12 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_d_overfits_64_images_and_p_rises(tiny_config, tmp_path):
    """64 training images: D soon calls them real with margin (r_t > 0.6) and p climbs, logged as train/ada_p.

    Fails if p is never updated, or updated from the wrong signal (e.g. the fakes' logits)."""
    import csv

    from gan_lab.train import train

    run = [
        "dataset.num_samples=64", "dataset.batch_size=16", "model.width=16", "steps=300",
        "trainer.log_every_n_steps=50", "augment=ada", "augment.ada.ramp_images=3200",
    ]  # fmt: skip
    module = train(tiny_config(*run))
    with open(tmp_path / "run" / "metrics.csv") as f:
        p = [float(row["train/ada_p"]) for row in csv.DictReader(f) if row.get("train/ada_p")]
    assert len(p) == 6 and p[-1] == pytest.approx(module.adaptive_augment.p.item())
    # Measured (AMX Xeon, seed 42): 0.24, 0.42, 0.30, 0.08, 0, 0: p rises while D overfits, falls once the
    # augmentations stop it (r_t < target), as ADA's controller should.
    assert max(p) > 0.1, f"p over training: {p}"
    assert all(0.0 <= value <= 1.0 for value in p)


def _ddp_adjust(rank: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ada = AdaptiveAugment(p=0.5, interval=4, ramp_images=3200)
    ada.observe(torch.ones(8) if rank == 0 else -torch.ones(24))  # rank 0 all +1, rank 1 all -1: r_t = -0.5
    ada.adjust(batch_size=8)
    torch.save(ada.p, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_under_ddp_every_rank_moves_p_by_the_global_r_t_and_batch(tmp_path):
    """Two gloo ranks with opposite signals (rank 0: 8 images all +1, rank 1: 24 images all -1): both take
    r_t = -0.5 over all 32 images and step p from 0.5 down by the global batch, 2 * 8 * 4 / 3200 = 0.02.
    Left to its own signal, rank 0 would rise to 0.51 and rank 1 fall to 0.49."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "p")
    mp.spawn(_ddp_adjust, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
    p0, p1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert p0.item() == p1.item() == pytest.approx(0.48)

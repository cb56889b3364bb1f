"""Augmentations: DiffAugment's ops against known answers, the real-only ops, routing, seeding and conf/augment/,
whose hflip is the data sampler's flips (dataset.hflip=true)."""

import math

import pytest
import torch
from conftest import HostRoundTrips
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.transforms.v2.functional import adjust_sharpness

from gan_lab.core.ada import AdaptiveAugment
from gan_lab.core.augment import (
    Augmentations,
    CutMix,
    DiffAugment,
    Sharpen,
    _adjust_sharpness,
    brightness,
    contrast,
    cutout,
    saturation,
    translation,
)
from gan_lab.errors import ConfigError, one_line, user_error
from gan_lab.legacy import HFlip, upgrade_stored_config
from gan_lab.utils.config import CONF_DIR, compose_config, config_choices

OPS = ["color", "translation", "cutout"]
CLASSES = {"cutmix": CutMix, "sharpen": Sharpen, "diffaugment": DiffAugment, "ada": AdaptiveAugment}


def images(n: int = 8, size: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, 3, size, size) images in [-1, 1] with no exact zeros (so zeroed pixels are the op's doing)."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(n, 3, size, size, generator=g, dtype=dtype) * 0.9 + 0.05
    sign = torch.randint(0, 2, magnitude.shape, generator=g, dtype=dtype) * 2 - 1
    return magnitude * sign


# --- DiffAugment ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [*OPS, "color,translation,cutout"])
def test_diffaugment_passes_finite_nonzero_gradients(policy):
    torch.manual_seed(0)
    x = images().requires_grad_()
    weights = torch.randn(x.shape)
    (grad,) = torch.autograd.grad((DiffAugment(policy)(x) * weights).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("policy", OPS)
def test_each_diffaugment_op_changes_images_and_keeps_shape(policy, dtype):
    torch.manual_seed(0)
    x = images(dtype=dtype)
    out = DiffAugment(policy)(x)
    assert (out.shape, out.dtype, out.device) == (x.shape, x.dtype, x.device)
    changed = (out != x).flatten(1).any(1)
    assert changed.sum() >= 6  # per image: a zero shift has probability 1/81 at 32 x 32


def test_translation_moves_content_by_at_most_an_eighth_and_pads_with_zeros():
    torch.manual_seed(0)
    x = torch.full((256, 3, 32, 32), -1.0)
    x[:, :, 16, 16] = 1.0  # one bright pixel on a dark background
    out = translation(x)
    shifts = []
    for image in out:
        (_, dy, dx), *rest = (image == 1).nonzero().tolist()
        assert len(rest) == 2  # the pixel moved as a whole: one position, three channels
        dy, dx = dy - 16, dx - 16
        assert max(abs(dy), abs(dx)) <= 4  # 32 / 8
        # Known answer: the image shifted by (dy, dx), zeros where the content came from outside.
        expected = torch.zeros(3, 32 + 8, 32 + 8)
        expected[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx] = x[0]
        assert torch.equal(image, expected[:, 4:36, 4:36])
        shifts.append((dy, dx))
    assert {dy for dy, _ in shifts} == set(range(-4, 5)) == {dx for _, dx in shifts}


def test_cutout_zeros_one_half_size_square_clipped_at_the_border():
    torch.manual_seed(0)
    x = torch.ones(256, 3, 32, 32)
    out = cutout(x)
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same pixels in every channel
    assert torch.equal(out[~zero], x[~zero])
    full = 0
    for mask in zero[:, 0]:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        assert len(rows) and len(cols)
        assert torch.equal(mask, mask.any(1)[:, None] & mask.any(0)[None, :])  # a rectangle
        for index in (rows, cols):
            assert torch.equal(index, torch.arange(index[0], index[-1] + 1))  # contiguous
            assert len(index) <= 16 and (len(index) == 16 or index[0] == 0 or index[-1] == 31)
        full += len(rows) * len(cols) == 16 * 16
    assert full > 256 // 4  # the centre is uniform: most squares lie inside
    assert len(set(map(tuple, zero[:, 0].flatten(1).tolist()))) > 100  # one square per image


def test_color_ops_keep_per_image_structure():
    torch.manual_seed(0)
    x = images(n=64)
    shift = brightness(x) - x
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift), atol=1e-6)
    assert shift.abs().max() <= 0.5 and shift[:, 0, 0, 0].std() > 0.1

    def gain(out, mean):
        """Per-image factor k with out - mean = k (x - mean), asserting there is one."""
        k = ((out - mean) * (x - mean)).flatten(1).sum(1) / ((x - mean) ** 2).flatten(1).sum(1)
        assert torch.allclose(out - mean, k[:, None, None, None] * (x - mean), atol=1e-5)
        return k

    gray = x.mean(1, keepdim=True)
    saturated = saturation(x)
    assert torch.allclose(saturated.mean(1, keepdim=True), gray, atol=1e-6)
    k = gain(saturated, gray)
    assert k.min() >= 0 and k.max() <= 2 and k.max() - k.min() > 1

    mean = x.mean((1, 2, 3), keepdim=True)
    contrasted = contrast(x)
    assert torch.allclose(contrasted.mean((1, 2, 3), keepdim=True), mean, atol=1e-6)
    k = gain(contrasted, mean)
    assert k.min() >= 0.5 and k.max() <= 1.5 and k.max() - k.min() > 0.5


def test_color_is_brightness_then_saturation_then_contrast():
    x = images()
    torch.manual_seed(3)
    expected = contrast(saturation(brightness(x)))
    torch.manual_seed(3)
    assert torch.equal(DiffAugment("color")(x), expected)


@pytest.mark.parametrize("policy", ["", None, [], " , "])
def test_empty_policy_is_the_identity(policy):
    x = images()
    assert torch.equal(DiffAugment(policy)(x), x)


def test_policy_as_list_equals_policy_as_string():
    x = images()
    torch.manual_seed(1)
    a = DiffAugment(["color", "cutout"])(x)
    torch.manual_seed(1)
    assert torch.equal(a, DiffAugment("color, cutout")(x))
    assert repr(DiffAugment(["color", "cutout"])) == "DiffAugment(policy='color,cutout')"


def test_unknown_policy_lists_the_valid_ops():
    with pytest.raises(
        ConfigError, match=r"augment\.diffaugment\.policy.*'zoom'.*color, translation, cutout"
    ):
        DiffAugment("color,zoom")


# --- real-only ops ----------------------------------------------------------------------------------------------
def test_cutmix_pastes_a_box_of_one_other_image_at_the_same_place():
    torch.manual_seed(0)
    x = images(n=64)
    out = CutMix(p=1.0)(x)
    source = (out[:, None] == x[None]).all(2)  # (N, M, H, W): output pixel of image n is the pixel of input m
    assert source.any(1).all()
    changed = 0
    for n in range(len(x)):
        others = [m for m in range(len(x)) if m != n and source[n, m].any()]
        if others:
            (m,) = others  # one partner per image
            box = source[n, m] & ~source[n, n]
            assert torch.equal(box, box.any(1)[:, None] & box.any(0)[None, :])  # a rectangle
            changed += 1
    assert changed >= 56  # p = 1: all but the (rare) boxes that round to nothing
    assert torch.equal(CutMix(p=0.0)(x), x)
    assert torch.equal(CutMix(p=1.0)(x[:1]), x[:1])  # nothing to mix with


def test_cutmix_box_area_follows_beta():
    torch.manual_seed(0)
    x = torch.arange(512.0)[:, None, None, None].expand(512, 3, 32, 32)  # each image one distinct value
    pasted = (CutMix(p=1.0, alpha=1.0)(x) != x)[:, 0].flatten(1).float().mean(1)
    # Area ~ U(0, 1) with the centre uniform: clipping at the border leaves about half of it on average.
    assert 0.25 < pasted.mean() < 0.45
    small = (CutMix(p=1.0, alpha=100.0)(x) != x)[:, 0].flatten(1).float().mean(1)
    assert small.std() < pasted.std()  # a peaked Beta(100, 100) gives boxes of nearly one size


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (3, 1, 5, 7), (2, 3, 2, 9)])
def test_sharpen_kernel_is_torchvisions_adjust_sharpness(factor: float, shape: tuple[int, ...]):
    """Our sync-free adjust_sharpness against torchvision's (the reference), clamping and tiny images included."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    x = x.clamp(0, 1)
    torch.testing.assert_close(_adjust_sharpness(x, factor), adjust_sharpness(x, factor), rtol=0, atol=1e-6)


def test_sharpen_matches_torchvision_and_stays_in_range():
    x = images().clamp(-1, 1)
    x[0] = -1.0
    x[1] = 1.0
    out = Sharpen(p=1.0, factor=2.0)(x)
    assert torch.allclose(out, adjust_sharpness((x + 1) / 2, 2.0) * 2 - 1)
    assert out.min() >= -1 and out.max() <= 1
    assert (out[2:] != x[2:]).flatten(1).any(1).all()
    assert torch.equal(out[:2], x[:2])  # constant images have nothing to sharpen
    assert torch.equal(Sharpen(p=0.0)(x), x)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: CutMix(p=-0.1), "augment.cutmix.p"),
        (lambda: CutMix(alpha=0.0), "augment.cutmix.alpha"),
        (lambda: Sharpen(p=math.nan), "augment.sharpen.p"),
        (lambda: Sharpen(factor=-1.0), "augment.sharpen.factor"),
    ],
)
def test_invalid_values_name_the_key(make, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make()


@pytest.mark.parametrize("op", [CutMix(), Sharpen(), DiffAugment()], ids=["cutmix", "sharpen", "diffaugment"])
def test_seeding_reproduces_the_output(op):
    x = images(n=16)
    torch.manual_seed(7)
    a = op(x)
    torch.manual_seed(7)
    assert torch.equal(op(x), a)
    torch.manual_seed(8)
    assert not torch.equal(op(x), a)


# --- the container ---------------------------------------------------------------------------------------------
class AddOne:
    target = "real"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


class TimesTen:
    target = "all"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * 10


@pytest.mark.parametrize("ops", [None, [], {}, {"a": None}])
def test_no_ops_is_the_identity(ops):
    x = images()
    augment = Augmentations(ops)
    assert not augment
    assert torch.equal(augment.real(x), x) and torch.equal(augment.fake(x), x)


@pytest.mark.parametrize("ops", [[TimesTen(), AddOne()], {"all": TimesTen(), "real": AddOne(), "off": None}])
def test_real_only_ops_apply_to_real_batches_first(ops):
    x = images()
    augment = Augmentations(ops)
    assert augment
    assert torch.equal(augment.real(x), (x + 1) * 10)  # data augmentation first, then what D always sees
    assert torch.equal(augment.fake(x), x * 10)
    assert "AddOne" in repr(augment) and "TimesTen" in repr(augment)


def test_real_ops_never_touch_fake_batches():
    x = images()
    augment = Augmentations([CutMix(p=1.0), Sharpen(p=1.0)])
    assert torch.equal(augment.fake(x), x) and not torch.equal(augment.real(x), x)


def test_a_non_op_is_a_config_error():
    with pytest.raises(ConfigError, match="not an augmentation op"):
        Augmentations([lambda x: x])


# --- conf/augment ---------------------------------------------------------------------------------------------
def test_conf_offers_one_yaml_per_op_none_and_hflip():
    assert {p.stem for p in (CONF_DIR / "augment").glob("*.yaml")} == {*CLASSES, "none", "hflip"}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_yaml_instantiates_its_op(name):
    node = OmegaConf.load(CONF_DIR / "augment" / f"{name}.yaml")
    assert list(node) == [name]  # one named entry, so several merge into the augment node
    op = instantiate(node[name])
    assert type(op) is CLASSES[name]
    x = images()
    assert op(x).shape == x.shape


def test_hflip_yaml_only_sets_dataset_hflip():
    path = CONF_DIR / "augment" / "hflip.yaml"
    assert path.read_text().startswith("# @package _global_\n")
    assert OmegaConf.to_container(OmegaConf.load(path)) == {"dataset": {"hflip": True}}


@pytest.mark.parametrize(
    ("overrides", "real", "fake", "flips"),
    [
        ([], [], [], False),
        (["augment=none"], [], [], False),
        (["augment=diffaugment"], [], [DiffAugment], False),
        (["augment=[diffaugment,cutmix]"], [CutMix], [DiffAugment], False),
        (["augment=hflip"], [], [], True),
        (["augment=[hflip,cutmix]"], [CutMix], [], True),
        (["augment=[diffaugment,hflip]"], [], [DiffAugment], True),
        (["augment=[hflip,sharpen]", "augment.sharpen.p=1.0"], [Sharpen], [], True),
        (["dataset.hflip=true"], [], [], True),
        (["augment=hflip", "dataset.hflip=false"], [], [], False),  # the command line wins, in either order
        (["dataset.hflip=false", "augment=hflip"], [], [], False),
    ],
)
def test_augment_group_composes(tmp_path, overrides, real, fake, flips):
    cfg = compose_config(overrides, output_dir=tmp_path)
    augment = Augmentations(instantiate(cfg.get("augment")))
    assert [type(op) for op in augment.real_ops] == real and [type(op) for op in augment.all_ops] == fake
    assert cfg.dataset.hflip is flips
    if "augment.sharpen.p=1.0" in overrides:
        assert augment.real_ops[0].p == 1.0


def test_augment_hflip_composes_to_dataset_hflip_and_no_op(tmp_path):
    via_augment = compose_config(["augment=hflip"], output_dir=tmp_path)
    via_dataset = compose_config(["dataset.hflip=true"], output_dir=tmp_path)
    assert via_augment.get("augment") is None and not Augmentations(instantiate(via_augment.get("augment")))
    assert via_dataset.augment == {}

    def without_augment(cfg):
        return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "augment"}

    assert without_augment(via_augment) == without_augment(via_dataset)


@pytest.mark.parametrize("order", ["augment first", "dataset first"])
def test_augment_hflip_flips_any_dataset(tmp_path, order):
    folder = ["dataset=folder", f"dataset.root={tmp_path}"]
    overrides = ["augment=hflip", *folder] if order == "augment first" else [*folder, "augment=hflip"]
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert cfg.dataset._target_ == "gan_lab.data.FolderDataModule" and cfg.dataset.root == str(tmp_path)
    assert cfg.dataset.hflip is True and cfg.get("augment") is None


@pytest.mark.parametrize(
    "recipe",
    [f"experiment={name}" for name in config_choices("experiment")]
    + [
        f"variant={path.relative_to(CONF_DIR / 'variant').with_suffix('').as_posix()}"
        for path in sorted((CONF_DIR / "variant").rglob("*.yaml"))
    ],
)
def test_augment_hflip_survives_every_recipe(tmp_path, recipe):
    assert compose_config([recipe, "augment=hflip"], output_dir=tmp_path).dataset.hflip is True
    assert compose_config([recipe], output_dir=tmp_path).dataset.hflip is False


def stream(cfg, passes: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches (images, labels) of cfg.dataset's first passes, as the model sees them."""
    dm = instantiate(cfg.dataset)
    dm.setup("fit")
    per_pass = len(dm.train_set) // dm.batch_size
    batches = []
    for p in range(passes):
        dm.trained_batches = lambda p=p: p * per_pass  # where a run resumes at pass p
        batches += [dm.on_after_batch_transfer(batch, 0) for batch in dm.train_dataloader()]
    return batches


@pytest.mark.parametrize("data", ["fake", "folder", "folder in memory"])
def test_augment_hflip_gives_the_samplers_flips_bit_for_bit(tmp_path, tiny_image_folder, data):
    if data == "fake":
        dataset = ["dataset=fake", "dataset.num_samples=32", "dataset.batch_size=8"]
    else:
        dataset = ["dataset=folder", f"dataset.root={tiny_image_folder}", "dataset.resolution=32"]
        dataset += ["dataset.batch_size=4", "dataset.num_workers=0", f"dataset.in_memory={'memory' in data}"]
    torch.manual_seed(0)  # the global RNG plays no part in the flips
    via_augment = stream(compose_config([*dataset, "augment=hflip"], output_dir=tmp_path))
    torch.manual_seed(1)
    via_dataset = stream(compose_config([*dataset, "dataset.hflip=true"], output_dir=tmp_path))
    unflipped = stream(compose_config(dataset, output_dir=tmp_path))
    assert len(via_augment) == len(via_dataset) == len(unflipped) >= 12
    flipped = kept = 0
    for (xa, ya), (xd, yd), (xu, yu) in zip(via_augment, via_dataset, unflipped, strict=True):
        assert torch.equal(xa, xd) and torch.equal(ya, yd)
        assert torch.equal(ya, yu)  # the same order: a pass's flips are drawn after its permutation
        for a, u in zip(xa, xu, strict=True):
            assert not torch.equal(u, u.flip(-1))  # asymmetric, so a flip shows
            if torch.equal(a, u):
                kept += 1
            else:
                assert torch.equal(a, u.flip(-1))  # whole images, mirrored exactly
                flipped += 1
    assert flipped > 0 and kept > 0 and 0.3 < flipped / (flipped + kept) < 0.7


def test_the_removed_hflip_op_names_its_replacement_in_one_line():
    expected = (
        "augment.hflip (flips on the global RNG) was replaced by dataset.hflip=true, the sampler's resumable "
        "flips (each image mirrored with probability 0.5); use augment=hflip or dataset.hflip=true in a new run "
        "(a run stored with augment.hflip cannot be resumed)"
    )
    for make in (HFlip, lambda: HFlip(p=1.0), lambda: HFlip(0.5)):
        with pytest.raises(ConfigError) as raised:
            make()
        assert str(raised.value) == expected
    # an old run's config as read: legacy.upgrade_stored_config gives HFlip its new home
    stored = OmegaConf.create(
        upgrade_stored_config({"hflip": {"_target_": "gan_lab.core.augment.HFlip", "p": 0.5}})
    )
    with pytest.raises(Exception) as raised:
        Augmentations(instantiate(stored))
    err = user_error(raised.value)  # what the command line prints, behind Hydra's InstantiationException
    assert isinstance(err, ConfigError) and one_line(err) == expected


# --- device -------------------------------------------------------------------------------------------------------
def _host_round_trips(fn) -> list[str]:
    with HostRoundTrips() as seen:
        fn()
    return seen


def test_ops_make_no_host_round_trips_checked_on_the_cpu():
    """The CPU-side guard of the GPU test below: no op asks for a host sync (the GPU check found two in
    Sharpen: torchvision's torch.tensor kernel, then an indexed assignment of a number)."""
    x = images()
    augment = Augmentations([CutMix(), Sharpen(), DiffAugment()])
    assert _host_round_trips(lambda: (augment.real(x), augment.fake(x))) == []
    # the check sees such an op: torchvision's adjust_sharpness makes its kernel from a Python list
    assert "lift_fresh" in _host_round_trips(lambda: adjust_sharpness((x + 1) / 2, 2.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ops_run_on_the_gpu_without_host_sync():
    x = images().cuda()
    augment = Augmentations([CutMix(), Sharpen(), DiffAugment()])
    augment.real(x)  # warm up: first calls may load kernels
    torch.cuda.set_sync_debug_mode("error")
    try:
        real, fake = augment.real(x), augment.fake(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert real.device == fake.device == x.device

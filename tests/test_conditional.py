"""Conditional GANs: class counts come from the dataset, labels reach both nets, and samples depend on the class."""

import pytest
import torch

from gan_lab.errors import ConfigError
from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lab.train import train


@pytest.mark.parametrize(("g_cond", "d_cond"), [("cbn", "projection"), ("embed", "concat")])
def test_conditional_dcgan_uses_the_labels(g_cond, d_cond):
    torch.manual_seed(0)
    g = DCGANGenerator(
        z_dim=8, resolution=32, width=4, num_classes=3, conditioning=g_cond
    )  # train mode: batch stats
    d = DCGANDiscriminator(resolution=32, width=4, num_classes=3, conditioning=d_cond, norm="spectral")
    if g_cond == "cbn":  # at init cBN is plain BN: give the classes different scales, as training would
        with torch.no_grad():
            for m in g.modules():
                if hasattr(m, "scale"):
                    m.scale.weight.normal_(1.0, 0.5)
    z = torch.randn(2, 8).repeat(3, 1)
    labels = torch.arange(3).repeat_interleave(2)
    images = g(z, labels)
    assert images.shape == (6, 3, 32, 32)
    assert (images[0:2] - images[2:4]).abs().max() > 1e-3  # same z, other class: other image
    x = torch.randn(2, 3, 32, 32).repeat(3, 1, 1, 1)
    logits = d(x, labels)
    assert logits.shape == (6,) and not torch.allclose(logits[0:2], logits[2:4])
    with pytest.raises(ConfigError, match="needs class labels"):
        g(z, None)


def test_cbn_generator_needs_batch_norm():
    with pytest.raises(ConfigError, match="takes the labels through batch norm.*conditioning=embed"):
        DCGANGenerator(num_classes=3, conditioning="cbn", norm="spectral")
    with pytest.raises(ConfigError, match="projection, concat"):
        DCGANDiscriminator(num_classes=3, conditioning="attention")


def test_class_count_comes_from_the_dataset(tiny_config, tmp_path):
    module = train(tiny_config("model=cgan", "dataset.num_classes=3", "steps=1"))
    assert module.num_classes == 3 and module.generator.num_classes == 3
    stored = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert stored["hyper_parameters"]["model"]["num_classes"] == 3  # a concrete count, for load_generator


def test_wrong_or_missing_class_count_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="model.num_classes=5 but the dataset has 2 classes"):
        train(tiny_config("model=cgan", "model.num_classes=5", "steps=1"))
    with pytest.raises(ConfigError, match="conditional but the dataset has no classes"):
        train(tiny_config("model=cgan", "dataset.num_classes=0", "steps=1"))


def test_sample_grid_has_one_row_per_class(tiny_config, tmp_path):
    from PIL import Image

    train(
        tiny_config(
            "model=cgan_projection", "dataset.num_classes=4", "steps=2", "callbacks.samples.num_samples=12"
        )
    )
    grid = Image.open(tmp_path / "run" / "samples" / "step_0000002.png")
    # 4 rows of 3 images of 32 px with torchvision's 2 px padding
    assert grid.size == (3 * 34 + 2, 4 * 34 + 2)


@pytest.mark.parametrize("model", ["cgan", "cgan_projection"])
@pytest.mark.slow  # ~30 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_conditional_model_learns_class_colours(tiny_config, model):
    """Two classes of blobs in two distinct colours: after training, each class's samples take its colour."""
    overrides = [f"model={model}", "dataset.num_samples=256", "dataset.batch_size=32", "model.width=16"]
    module = train(tiny_config(*overrides, "steps=400", "optim.lr=5e-4"))
    data = module.trainer.datamodule.train_set
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor([data[i][1] for i in range(len(data))])
    data_colour = torch.stack([images[labels == k].mean(dim=(0, 2, 3)) for k in (0, 1)])  # (2 classes, RGB)
    z = torch.randn(128, module.z_dim, generator=torch.Generator().manual_seed(3))
    sample_colour = torch.stack(
        [module.generate(z, torch.full((128,), k)).mean(dim=(0, 2, 3)) for k in (0, 1)]
    )
    # each class's samples are closer to their own class's mean colour than to the other class's
    distance = torch.cdist(sample_colour, data_colour)  # [sample class, data class]
    print(f"{model}: colour distances [sample class, data class] = {distance.tolist()}")
    assert distance[0, 0] < 0.5 * distance[0, 1] and distance[1, 1] < 0.5 * distance[1, 0], distance

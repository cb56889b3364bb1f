"""Safe loading and `python -m gan_lab.export`: weights-only checkpoints, safetensors exports, refused payloads."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, run_module
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from test_sample import small

from gan_lab.errors import GanLabError
from gan_lab.export import export_checkpoint
from gan_lab.run.checkpoint_io import (
    EMA_PREFIX,
    GENERATOR_PREFIX,
    build_generator,
    generator_state,
    load_checkpoint,
    load_generator,
)
from gan_lab.sample import default_out_dir, sample
from gan_lab.train import train
from gan_lab.utils.config import CONF_DIR, compose_config

SECRET = "sk-live-0123456789abcdef"  # a W&B-key-like value that must never reach an export


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real two-step run with what checkpoints can hold: cosine LR schedules, EMA, spectral norm in G."""
    run = tmp_path_factory.mktemp("train") / "run"
    overrides = ["steps=2", "scheduler=cosine", "ema.decay=0.9", "normalization.generator=spectral_batch"]
    train(compose_config([*TINY_RUN, *overrides, f"+paths.wandb_api_key={SECRET}"], output_dir=run))
    return run


@pytest.fixture(scope="module")
def ckpt(run) -> Path:
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def exported(ckpt) -> dict[str, Path]:
    """The default export of ckpt: <run dir>/export/."""
    return export_checkpoint(ckpt)


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_files(tmp_path: Path) -> tuple[list[Path], Path]:
    """A zip checkpoint whose state_dict carries Payload, and the same payload as a bare pickle; the marker."""
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.ckpt"
    evil = {"state_dict": {"generator.w": Payload(marker)}, "hyper_parameters": {}}
    torch.save(evil, zipped)
    bare = tmp_path / "evil_pickle.ckpt"
    bare.write_bytes(pickle.dumps(evil))
    return [zipped, bare], marker


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and len(message) < 500, message
    return message


def fixed_noise(loaded, n: int = 6) -> torch.Tensor:
    return torch.randn(n, loaded.z_dim, generator=torch.Generator().manual_seed(0))


# --- what a real checkpoint holds ------------------------------------------------------------------------------
def test_real_checkpoint_loads_weights_only(ckpt):
    checkpoint = load_checkpoint(ckpt)  # torch.load(weights_only=True), no extra safe globals
    assert len(checkpoint["lr_schedulers"]) == 2 and checkpoint["optimizer_states"]
    assert any(k.startswith(EMA_PREFIX) for k in checkpoint["state_dict"])
    assert any("parametrizations.weight.original" in k for k in checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["paths"]["wandb_api_key"] == "<redacted>"


# --- export round trip ------------------------------------------------------------------------------------------
def test_export_writes_weights_config_and_metadata(ckpt, exported):
    out = ckpt.parent.parent / "export"
    assert exported == {
        "generator": out / "generator.safetensors",
        "generator_ema": out / "generator_ema.safetensors",
        "config": out / "config.yaml",
    }
    state = load_checkpoint(ckpt)["state_dict"]
    for name, prefix in (("generator", GENERATOR_PREFIX), ("generator_ema", EMA_PREFIX)):
        weights, stored = load_file(exported[name]), generator_state(state, prefix)
        assert (
            weights.keys() == stored.keys()
        )  # spectral norm as is: parametrizations.weight.original, _u, _v
        assert all(torch.equal(weights[k], stored[k]) for k in stored)
    config = OmegaConf.load(exported["config"])
    assert config.export.g_steps == 2 and config.export.format == "gan_lab.generator.v1"
    assert config.model.generator._target_.startswith("gan_lab.nets.") and config.dataset._target_


@pytest.mark.parametrize("which", ["ema", "raw"])
def test_export_samples_equal_checkpoint_samples_bit_for_bit(ckpt, exported, which):
    if which == "ema":  # the checkpoint's sampling generator vs the export directory (EMA preferred)
        from_ckpt = load_generator(ckpt)
        from_export = load_generator(exported["config"].parent)
    else:  # the raw generator: built from the checkpoint's generator.* vs generator.safetensors alone
        from_ckpt = load_generator(ckpt)
        state = load_checkpoint(ckpt)["state_dict"]
        from_ckpt.generator = build_generator(
            from_ckpt.config, generator_state(state, GENERATOR_PREFIX), ckpt
        )
        from_ckpt.generator.eval()
        from_export = load_generator(exported["generator"])
    assert from_export.g_steps == from_ckpt.g_steps == 2
    z = fixed_noise(from_ckpt)
    with torch.no_grad():
        assert torch.equal(from_export.generator(z), from_ckpt.generator(z))


def test_ema_and_raw_exports_differ(exported):
    ema, raw = load_generator(exported["generator_ema"]), load_generator(exported["generator"])
    z = fixed_noise(ema)
    with torch.no_grad():
        assert not torch.equal(ema.generator(z), raw.generator(z))  # so both round trips above test something


def test_sample_accepts_an_export_and_writes_the_same_images(ckpt, exported, tmp_path):
    a = sample(small(ckpt, tmp_path / "a"))
    b = sample(small(exported["config"].parent, tmp_path / "b"))
    assert a.keys() == b.keys()
    for path in (tmp_path / "a").rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def test_default_output_dirs_of_exports(run, exported, tmp_path):
    assert default_out_dir(exported["config"].parent, 0) == run / "generated" / "seed0"  # <run>/export
    assert default_out_dir(exported["generator"], 0) == run / "generated" / "seed0"
    standalone = export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "sndcgan")
    assert default_out_dir(standalone["config"].parent, 1) == tmp_path / "sndcgan" / "generated" / "seed1"


def test_export_cli_prints_paths_and_no_secret(ckpt, tmp_path):
    result = run_module("gan_lab.export", f"ckpt={ckpt}", "out=shared", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # no outputs/, .hydra/ or export.log
    names = sorted(p.name for p in (tmp_path / "shared").iterdir())
    assert names == ["config.yaml", "generator.safetensors", "generator_ema.safetensors"]
    assert str(tmp_path / "shared" / "generator.safetensors") in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_export_config_redacts_secrets_of_older_checkpoints(ckpt, tmp_path):
    checkpoint = load_checkpoint(ckpt)  # a checkpoint written before training redacted its config
    checkpoint["hyper_parameters"]["logger"] = {"wandb": {"api_key": SECRET, "project": "gan_lab"}}
    checkpoint["hyper_parameters"]["paths"]["wandb_api_key"] = SECRET
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    text = export_checkpoint(old, tmp_path / "out")["config"].read_text()
    assert SECRET not in text
    config = OmegaConf.load(tmp_path / "out" / "config.yaml")
    assert config.logger.wandb.api_key == "<redacted>" and config.logger.wandb.project == "gan_lab"


def test_reexport_without_ema_removes_the_stale_ema_file(ckpt, tmp_path):
    checkpoint = load_checkpoint(ckpt)  # the same run as if trained without ema.decay
    for key in [k for k in checkpoint["state_dict"] if k.startswith("generator_ema.")]:
        del checkpoint["state_dict"][key]
    no_ema = tmp_path / "no_ema.ckpt"
    torch.save(checkpoint, no_ema)
    export_checkpoint(ckpt, tmp_path / "out")
    paths = export_checkpoint(no_ema, tmp_path / "out")
    assert "generator_ema" not in paths and not (tmp_path / "out" / "generator_ema.safetensors").exists()


# --- refused files: no code runs, one clear line ---------------------------------------------------------------
def test_malicious_pickle_is_refused_without_running(tmp_path):
    files, marker = malicious_files(tmp_path)
    control = tmp_path / "control.ckpt"  # the payload is real: an unsafe load runs it
    torch.save({"x": Payload(tmp_path / "ran")}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "ran").exists()
    for path in files:
        for load in (load_checkpoint, load_generator):
            with pytest.raises(GanLabError) as err:
                load(path)
            assert str(path) in one_line(err)
            assert not marker.exists()
    with pytest.raises(GanLabError) as err:
        load_checkpoint(files[0])
    assert "posix.system" in one_line(err) and "weights_only" not in one_line(err)  # no unsafe advice


def test_malicious_checkpoint_is_refused_by_the_sample_cli(tmp_path):
    (path, _), marker = malicious_files(tmp_path)
    result = run_module("gan_lab.sample", f"ckpt={path}", "out_dir=out", cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("gan_lab: error:")]
    assert len(lines) == 1 and "a pickle can run code" in lines[0], result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_malicious_checkpoint_is_refused_by_evaluate(tmp_path):
    from gan_lab.evaluate import evaluate

    (path, _), marker = malicious_files(tmp_path)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"ckpt={path}", "device=cpu"])
    with pytest.raises(GanLabError) as err:
        evaluate(cfg)
    assert "a pickle can run code" in one_line(err) and not marker.exists()


@pytest.mark.parametrize("where", ["checkpoint", "export"])
def test_config_naming_foreign_code_is_refused(ckpt, exported, tmp_path, where):
    """Hydra would call any `_target_`: a shared config must not choose os.system."""
    marker = tmp_path / "pwned"
    evil = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    if where == "checkpoint":
        checkpoint = load_checkpoint(ckpt)
        checkpoint["hyper_parameters"]["model"]["generator"]["extra"] = evil  # nested: instantiated too
        path = tmp_path / "evil.ckpt"
        torch.save(checkpoint, path)
    else:
        path = tmp_path / "export"
        path.mkdir()
        (path / "generator.safetensors").write_bytes(exported["generator"].read_bytes())
        config = OmegaConf.load(exported["config"])
        config.dataset = evil
        OmegaConf.save(config, path / "config.yaml")
    with pytest.raises(GanLabError, match="os.system") as err:
        load_generator(path)
    assert "gan_lab only builds" in one_line(err) and not marker.exists()


def test_unreadable_checkpoints_are_one_clear_line(ckpt, tmp_path):
    data = ckpt.read_bytes()
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "is the file complete"),
        "text.ckpt": (b"not a checkpoint\n", "not a PyTorch checkpoint"),
        "empty.ckpt": (b"", "not a PyTorch checkpoint"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(GanLabError) as err:
            load_generator(tmp_path / name)
        assert expected in one_line(err) and name in one_line(err)
    other = tmp_path / "other.ckpt"  # a readable torch file that is not a gan_lab checkpoint
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(GanLabError) as err:
        load_generator(other)
    assert "not a gan_lab training checkpoint" in one_line(err)


def copy_export(exported: dict[str, Path], dest: Path, config: bool = True) -> Path:
    dest.mkdir()
    (dest / "generator.safetensors").write_bytes(exported["generator"].read_bytes())
    if config:
        (dest / "config.yaml").write_text(exported["config"].read_text())
    return dest


def test_broken_exports_are_one_clear_line(exported, tmp_path):
    weights = exported["generator"].read_bytes()
    truncated = copy_export(exported, tmp_path / "truncated")
    (truncated / "generator.safetensors").write_bytes(weights[: len(weights) // 2])
    text = copy_export(exported, tmp_path / "text")
    (text / "generator.safetensors").write_text("hello\n")
    untagged = copy_export(exported, tmp_path / "untagged")  # safetensors, but not a gan_lab export
    save_file({"w": torch.zeros(2)}, untagged / "generator.safetensors")
    other_arch = copy_export(exported, tmp_path / "other_arch")  # config.yaml of a wider generator
    config = OmegaConf.load(exported["config"])
    config.model.generator.width = 8
    OmegaConf.save(config, other_arch / "config.yaml")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        truncated: "not a readable safetensors file",
        text / "generator.safetensors": "not a readable safetensors file",
        untagged: "not a gan_lab generator export",
        copy_export(exported, tmp_path / "no_config", config=False): "config.yaml not found",
        other_arch: "do not fit gan_lab.nets.",
        empty: "holds neither generator_ema.safetensors nor generator.safetensors",
        tmp_path / "missing.safetensors": "not found",
    }
    for path, expected in cases.items():
        with pytest.raises(GanLabError) as err:
            load_generator(path)
        assert expected in one_line(err), path


@pytest.mark.shared
@pytest.mark.slow  # Inception-v3 on the CPU: ~30 s
def test_evaluate_accepts_an_export(run, exported, inception_weights, tmp_path):
    from gan_lab.evaluate import evaluate

    overrides = [f"ckpt={exported['config'].parent}", "device=cpu", "metrics.num_fake=8", "metrics.kid=false"]
    overrides += [f"metrics.inception_weights={inception_weights}", f"metrics.cache_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        report = evaluate(compose(config_name="evaluate", overrides=overrides))
    assert (
        report["g_steps"] == 2
        and report["fid"] > 0
        and report["dataset"]["_target_"] == "gan_lab.data.FakeDataModule"
    )
    assert (
        run / f"evaluation_{report['names']['fid']}_export.json"
    ).is_file()  # beside the run, as for a .ckpt

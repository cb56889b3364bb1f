"""What a normal run prints: gan_lab's own lines and its progress bar, and flags that switch them off."""

import logging

from conftest import TINY_RUN

from gan_lab.train import train
from gan_lab.utils.config import compose_config
from gan_lab.utils.console import quiet_third_party


def test_enable_progress_bar_false_alone_turns_the_bar_off(tmp_path, capsys):
    overrides = [
        o for o in TINY_RUN if not o.startswith(("callbacks.progress_bar", "trainer.enable_progress_bar"))
    ]
    train(compose_config([*overrides, "steps=2", "trainer.enable_progress_bar=false"], output_dir=tmp_path))
    assert "g_step" not in capsys.readouterr().err  # the bar's postfix never drawn


NOISE = (
    "litlogger",  # Lightning's advertisement
    "Total FLOPs",  # its summary table's FLOPs, 0 for GANs
    "LeafSpec",  # a deprecation inside Lightning
    "smaller than the logging interval",  # gan_lab logs at generator steps
    "not supported by the model summary",
)


def test_a_run_prints_gan_labs_lines_and_no_third_party_noise(tmp_path, capfd, caplog, recwarn):
    quiet_third_party()  # pytest resets warning filters for each test; a run installs them when train is imported
    caplog.set_level(logging.INFO)
    overrides = [o for o in TINY_RUN if o != "trainer.enable_model_summary=false"]
    train(compose_config([*overrides, "steps=2", "trainer.log_every_n_steps=50"], output_dir=tmp_path))
    out, err = capfd.readouterr()
    printed = "\n".join([out, err, caplog.text, *(str(w.message) for w in recwarn)])
    assert [noise for noise in NOISE if noise in printed] == []
    assert "parameters: generator DCGANGenerator" in caplog.text  # the summary's one line


def test_the_bar_reads_the_losses_only_when_it_redraws(tmp_path, monkeypatch):
    """Reading a GPU loss waits for the GPU: the bar reads the GANModule's last losses every refresh_rate batches
    (not Lightning's per-batch prog_bar metrics), and shows the values the module computed."""
    from gan_lab.callbacks.progress import GANProgressBar

    reads: list[dict] = []
    original = GANProgressBar.get_metrics

    def recording(self, trainer, pl_module):
        metrics = original(self, trainer, pl_module)
        reads.append({k: metrics[k] for k in ("train/d_loss", "train/g_loss", "train/g_step")})
        expected = {f"train/{k}": v.item() for k, v in pl_module.last_losses.items()}
        assert {k: reads[-1][k] for k in expected} == expected
        return metrics

    monkeypatch.setattr(GANProgressBar, "get_metrics", recording)
    overrides = [
        o for o in TINY_RUN if not o.startswith(("callbacks.progress_bar", "trainer.enable_progress_bar"))
    ]
    settings = ["steps=12", "dataset.num_samples=128", "callbacks.progress_bar.refresh_rate=5"]
    module = train(compose_config([*overrides, *settings], output_dir=tmp_path))
    assert module.trainer.num_training_batches >= 12
    # batches 5 and 10, then the epoch's end; never once per batch
    assert [r["train/g_step"] for r in reads] == [5, 10, 12]
    assert "train/d_loss" not in module.trainer.progress_bar_metrics  # nothing Lightning reads every batch

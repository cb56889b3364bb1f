"""Results files: benchmarks/results.json (raw numbers), results.md (the table) and the README section."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from gan_lab.bench.measure import machine_line
from gan_lab.utils.io import atomic_write_text

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
SECTIONS = ("training", "fid_features", "quality")  # what each command contributes to results.json


def merge_results(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """results.json with `new`'s sections replacing the stored ones; the other command's sections are kept."""
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    return {**old, **new}  # top-level keys are the sections (and `quick`); each carries its machine and date


def write_results(results: dict[str, Any], out_dir: Path, readme: Path | None = None) -> bool:
    """Merge into out_dir/results.json, write results.md, refresh README's section; True if refreshed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    merged = merge_results(json_path, results)
    atomic_write_text(json_path, json.dumps(merged, indent=2, default=str) + "\n")
    body = render_markdown(merged)
    atomic_write_text(out_dir / "results.md", body + "\n")
    return readme is not None and replace_between_markers(readme, body)


def replace_between_markers(path: Path, body: str, start: str = START_MARKER, end: str = END_MARKER) -> bool:
    """Put `body` between the file's start and end markers; False (file untouched) without both."""
    if not path.is_file():
        return False
    text = path.read_text()
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        return False
    atomic_write_text(path, text[: i + len(start)] + "\n" + body.strip("\n") + "\n" + text[j:])
    return True


# --- rendering ----------------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _range(s: dict[str, Any], digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    """'median (min–max)' of a summary."""
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    dash = " to " if lo < 0 else "–"  # "-4.0–2.7" would read as a subtraction
    return f"{m:.{digits}f}{unit} ({lo:.{digits}f}{dash}{hi:.{digits}f})"


def _steps(n: int, kind: str = "generator") -> str:
    return f"{n} {kind} step{'s' * (n != 1)}"


def _check(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _sections(results: dict[str, Any]) -> tuple[dict | None, dict | None, dict | None]:
    """(training, fid_features, quality); a section written differently (older benchmark) is left out."""
    required = {"training": "contenders", "fid_features": "images", "quality": "gan_lab"}
    found = []
    for name in SECTIONS:
        section = results.get(name)
        ok = isinstance(section, dict) and (required[name] in section or "skipped" in section)
        found.append(section if ok else None)
    return found[0], found[1], found[2]


def render_markdown(results: dict[str, Any]) -> str:
    """The README section and results.md: one table of ratios, the machine, then raw numbers and settings."""
    training, fid, quality = _sections(results)
    commands = []
    if training:
        commands.append(f"`python -m gan_lab.bench` ({training['machine']['date'][:10]})")
    if quality:
        commands.append(f"`python -m gan_lab.bench quality` ({quality['machine']['date'][:10]})")
    lines = []
    if results.get("quick"):
        lines += ["**Quick mode (tiny settings, for tests): these numbers say nothing about speed.**", ""]
    lines += [
        f"Written by {' and '.join(commands) or 'the benchmark'}; raw numbers in `benchmarks/results.json`. "
        "Throughput ratios pair contenders run back to back in one process (A B C, A B C, ...): median over "
        "the repeats, min–max in brackets.",
        "",
        "| figure | gan_lab | baseline | ratio | target |",
        "|---|---|---|---|---|",
    ]
    if training:
        lines += _training_rows(training)
    if fid and "skipped" not in fid:
        lines.append(
            f"| FID feature throughput vs torch-fidelity (same {fid['images']} images, same features) | "
            f"{_range(fid['gan_lab'], 2)} img/s | {_range(fid['torch_fidelity'], 2)} img/s | "
            f"{_range(fid['speedup'], 2, unit='×')} | — |"
        )
    if quality:
        q, s = quality, quality["settings"]
        lines.append(
            f"| {q['metric']} after {s['minutes']:g} min of CPU training: gan_lab `model={s['model']}` "
            f"vs the "
            f"classic design ({s['resolution']}², batch {s['batch_size']}; lower is better) | "
            f"{q['gan_lab']['fid']:.1f} ({q['gan_lab']['g_steps']:,} G steps) | "
            f"{q['classic']['fid']:.1f} ({q['classic']['g_steps']:,} G steps) | "
            f"{q['gan_lab']['fid'] / q['classic']['fid']:.2f}× the FID | reported |"
        )
    first = training or quality
    if first:
        lines += ["", f"Machine: {machine_line(first['machine'])}."]
    lines += ["", "<details><summary>Raw numbers and settings</summary>", ""]
    if training:
        lines += _training_details(training)
    if fid:
        lines += _fid_details(fid)
    if quality:
        lines += _quality_details(quality, same_machine=quality is first)
    lines += ["</details>"]
    return "\n".join(lines) + "\n"


def _training_rows(t: dict[str, Any]) -> list[str]:
    c, r, s, targets = t["contenders"], t["ratios"], t["settings"], t["targets"]
    shape = f"{s['model']} {s['resolution']}², batch {s['batch_size']}"
    overhead, speedup = r["framework_overhead"], r["end_to_end_speedup"]
    max_overhead, min_speedup = targets["framework_overhead_max"], targets["end_to_end_speedup_min"]

    def rate(name: str) -> str:
        return f"{_range(c[name]['images_per_s'])} img/s, {c[name]['g_steps_per_s']['median']:.2f} G steps/s"

    return [
        f"| Framework overhead: `GANModule` vs a plain PyTorch loop of the same nets, loss, optimizers, "
        f"batches "
        f"and precision ({shape}) | {rate('gan_lab')} | {rate('plain')} | "
        f"{_range(overhead, 1, 100, ' %')} more time per step | "
        f"≤ {max_overhead:.0%}: {_check(overhead['median'] <= max_overhead)} |",
        f"| End to end, data loading included: gan_lab vs the classic DCGAN example's design (fp32, "
        f"ImageFolder decoding every step, {s['classic_workers']} worker; {shape}) | {rate('gan_lab')} | "
        f"{rate('classic')} | {_range(speedup, 2, unit='×')} | "
        f"≥ {min_speedup:g}×: {_check(speedup['median'] >= min_speedup)} |",
        f"| Share of the bf16 limit (model FLOPs per step ÷ measured bf16 matmul FLOP/s) | "
        f"{_range(c['gan_lab']['bf16_limit_fraction'], 1, 100, ' %')} | "
        f"classic: {_range(c['classic']['bf16_limit_fraction'], 1, 100, ' %')} | — | reported |",
    ]


def _training_details(t: dict[str, Any]) -> list[str]:
    s, m = t["settings"], t["matmul"]
    lines = [
        f"**Training throughput**: {s['repeats']} repeats; gan_lab and the plain loop time "
        f"{_steps(s['steps'])} after {_steps(s['warmup'], 'warm-up')}, the classic design "
        f"{_steps(s['classic_steps'])} after {_steps(s['classic_warmup'], 'warm-up')}; steady-state time "
        "between generator steps, set-up excluded. gan_lab ran "
        f"`{' '.join(s['gan_lab_overrides'])}` with its speed defaults, resolved to: "
        f"{_speed(s['gan_lab_speed'])}.",
        "",
        "| contender | images/s per repeat | G steps/s (median) | GFLOP per D+G step | share of bf16 limit "
        "| s per run with set-up (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in t["contenders"].items():
        per_repeat = ", ".join(f"{v:.1f}" for v in c["images_per_s"]["values"])
        lines.append(
            f"| {name}: {c['description']} | {per_repeat} | {c['g_steps_per_s']['median']:.3f} | "
            f"{c['flops_per_step'] / 1e9:.1f} | {c['bf16_limit_fraction']['median']:.1%} | "
            f"{_num(statistics.median(c['wall_s']) if c.get('wall_s') else None, 0)} |"
        )
    lines += [
        "",
        f"Matmul on this machine (best of n = {', '.join(m['sizes'])}): bf16 "
        f"{m['bf16_flops_per_s'] / 1e12:.2f} TFLOP/s, fp32 {m['fp32_flops_per_s'] / 1e12:.2f} TFLOP/s "
        f"({m['bf16_flops_per_s'] / m['fp32_flops_per_s']:.1f}×); the bf16 limit of a step is its model "
        "FLOPs "
        "(FlopCounterMode: convolutions and matmuls, forward and backward) at that rate.",
        "",
    ]
    lines += [f"- {note}" for note in t.get("notes", [])]
    return lines + ([""] if t.get("notes") else [])


def _speed(speed: dict[str, Any] | None) -> str:
    if not speed:
        return "unknown"
    return (
        f"precision {speed['precision']}, {'channels_last' if speed['channels_last'] else 'NCHW'}, "
        f"compile {'on' if speed['compile'] else 'off'}, fused Adam {speed['fused']}, "
        f"device {speed['device']}"
    )


def _fid_details(f: dict[str, Any]) -> list[str]:
    if "skipped" in f:
        return [f"FID feature throughput skipped: {f['skipped']}.", ""]
    return [
        f"**FID features**: {f['images']} CIFAR images at {f['resolution']}² (resized to 299² inside "
        "Inception), "
        f"batch {f['batch_size']}, gan_lab's `Evaluator.fake_features` against torch-fidelity's "
        "`get_featuresdict_from_dataset` (what `calculate_metrics` runs for a Dataset, its defaults); per "
        f"repeat gan_lab {', '.join(f'{v:.2f}' for v in f['gan_lab']['values'])} img/s, torch-fidelity "
        f"{', '.join(f'{v:.2f}' for v in f['torch_fidelity']['values'])} img/s; largest feature difference "
        f"{f['max_abs_feature_difference']:.2e}.",
        "",
    ]


def _quality_details(q: dict[str, Any], same_machine: bool) -> list[str]:
    s = q["settings"]
    lines = [
        f"**Quality**: each contender trained {s['minutes']:g} minutes (wall time from its first batch) at "
        f"{s['resolution']}², batch {s['batch_size']}, then {q['metric']} of the shared CIFAR copy, both "
        "generators in eval mode on the same noise; gan_lab ran "
        f"`{' '.join(s['gan_lab_overrides'])}` ({_speed(s.get('gan_lab_speed'))}).",
        "",
        "| contender | FID | G steps | images/s | training s |",
        "|---|---|---|---|---|",
    ]
    for name in ("gan_lab", "classic"):
        c = q[name]
        lines.append(
            f"| {name}: {c['description']} | {c['fid']:.2f} | {c['g_steps']:,} | "
            f"{_num(c['images_per_s'])} | {c['train_s']:.0f} |"
        )
    lines += [""] if same_machine else ["", f"Quality measured on: {machine_line(q['machine'])}.", ""]
    lines += [f"- {note}" for note in q.get("notes", [])]
    return lines + ([""] if q.get("notes") else [])

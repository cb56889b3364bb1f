"""Results files: benchmarks/results.json (raw numbers) and results.md (the table, linked from the docs)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from gan_lab.utils.io import atomic_write_text
from gan_lab.utils.machine import machine_line

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


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    """Merge into out_dir/results.json and write results.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    merged = merge_results(json_path, results)
    atomic_write_text(json_path, json.dumps(merged, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "results.md", render_markdown(merged) + "\n")


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
    """results.md: one table of ratios, the machine, then raw numbers and settings."""
    training, fid, quality = _sections(results)
    commands = []
    if training:
        commands.append(f"`python -m benchmarks` ({training['machine']['date'][:10]})")
    if quality:
        commands.append(f"`python -m benchmarks quality` ({quality['machine']['date'][:10]})")
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
    """A run's speed record (loops.RunSpeed.as_dict). `capture` and `tf32` are absent from records stored before
    the record was a SpeedSettings, whose `compile` said whether the nets ran compiled (capture=nets included)."""
    if not speed:
        return "unknown"
    capture = speed.get("capture") or "false"
    compiled = speed["compile"] or capture == "nets"
    parts = [
        f"precision {speed['precision']}",
        "channels_last" if speed["channels_last"] else "NCHW",
        f"compile {'on' if compiled else 'off'}",
    ]
    parts += [f"speed.capture={capture}"] if capture != "false" else []
    if speed.get("tf32") is not None and str(speed["device"]).startswith("cuda"):
        parts.append(f"TF32 {'on' if speed['tf32'] else 'off'}")
    return ", ".join([*parts, f"fused Adam {speed['fused']}", f"device {speed['device']}"])


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


# --- `python -m benchmarks gpu` --------------------------------------------------------------------------


def write_gpu_results(results: dict[str, Any], out_dir: Path) -> None:
    """out_dir/results.json (the whole run, replaced) and results.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "results.md", render_gpu_markdown(results))


def _gpu_line(m: dict[str, Any], device: str) -> str:
    where = m.get("gpu") if device == "cuda" else f"the CPU ({m['cpu']}, {m['usable_cores']} cores)"
    cores = f"; {m['usable_cores']} CPU cores ({m['cpu']})" if device == "cuda" else ""
    return (
        f"{where}; torch {m['torch']}, lightning {m['lightning']}; gan_lab {m['gan_lab_commit']}; "
        f"{m['date']}{cores}"
    )


def _rate(c: dict[str, Any], key: str = "images_per_s", digits: int = 0) -> str:
    return _range(c[key], digits) if key in c else "—"


def _status(c: dict[str, Any]) -> str:
    if "unavailable" in c or "skipped" in c:
        return f"unavailable: {c['unavailable']}" if "unavailable" in c else f"skipped: {c['skipped']}"
    return f"failed: {c['error']}" if "error" in c else c.get("note", "")


def _preset_lines(preset: dict[str, Any], classic: dict[str, Any], shape: str, results: dict) -> list[str]:
    """Part b: the study preset against pytorch/examples' script (where it ran) and the classic design."""
    x, examples, best = preset["contender"], preset.get("examples"), results.get("best_settings", {})

    def share(c: dict[str, Any]) -> str:
        return _range(c["bf16_limit_fraction"], 1, 100, " %") if "bf16_limit_fraction" in c else "—"

    def times(name: str) -> str:
        return f"{preset[f'speedup_vs_{name}']:.2f}×" if f"speedup_vs_{name}" in preset else "—"

    verdict = "pytorch/examples' script was not run (no `--examples-script`)"
    if "speedup_vs_examples" in preset:
        target = preset["target_vs_examples"]
        verdict = f"target ≥ {target:g}× pytorch/examples' script: {_check(preset['speedup_vs_examples'] >= target)}"
    lines = [
        f"**b. SN-DCGAN study preset, {shape}** with the fastest settings of a (`{best.get('contender')}`: "
        f"{' '.join(best.get('overrides') or []) or 'defaults'}), against pytorch/examples' `dcgan/main.py` run "
        f"unmodified (one epoch, its steady iterations after {results['settings']['classic_warmup']}) and the "
        f"classic design: {verdict}.",
        "",
        "| contender | images/s | × pytorch/examples | × classic | share of bf16 limit | note |",
        "|---|---|---|---|---|---|",
        f"| gan_lab {x['description']} | {_rate(x)} | {times('examples')} | {times('classic')} | {share(x)} | "
        f"{_status(x)} |",
    ]
    if examples:
        commit = f" (commit {examples['commit'][:7]})" if examples.get("commit") else ""
        ratio = f"{examples['images_per_s']['median'] / classic['images_per_s']['median']:.2f}×" if (
            "images_per_s" in examples and "images_per_s" in classic) else "—"  # fmt: skip
        lines.append(f"| {examples['description']}{commit} | {_rate(examples)} | 1.00× | {ratio} | | "
                     f"{_status(examples)} |")  # fmt: skip
    lines += [
        f"| classic: {classic.get('description', '—')} | {_rate(classic)} | | 1.00× | {share(classic)} | |",
        "",
    ]
    return lines


def render_gpu_markdown(results: dict[str, Any]) -> str:
    """results.md of the gpu command: one table per part, each figure with the machine it was measured on."""
    s, lines = results["settings"], []
    if results.get("quick"):
        lines += [
            "**Quick mode (tiny settings on the CPU, for tests): these numbers say nothing about speed.**",
            "",
        ]
    lines += [
        f"Written by `python -m benchmarks gpu` on {_gpu_line(results['machine'], s['device'])}. Raw numbers in "
        "results.json.",
        "",
    ]
    shape = f"{s['resolution']}², batch {s['batch_size']}"
    bf16 = (results.get("matmul") or {}).get("bf16_flops_per_s")
    if bf16:
        m = results["matmul"]
        lines += [f"Matmul (best of n = {', '.join(m['sizes'])}): bf16 {m['bf16_flops_per_s'] / 1e12:.1f} TFLOP/s, "
                  f"fp32 {m['fp32_flops_per_s'] / 1e12:.1f} TFLOP/s.", ""]  # fmt: skip
    dcgan = results.get("dcgan")
    if dcgan:
        c = dcgan["contenders"]
        ref = c["gan_lab"].get("images_per_s", {}).get("median")
        lines += [
            f"**a, c. DCGAN {shape}: steady-state images/s** ({s['repeats']} repeats, contenders in turn; "
            f"{s['steps']} G steps after {s['warmup']} warm-up, classic {s['classic_steps']} after "
            f"{s['classic_warmup']}); share of the bf16 limit = FLOPs per D+G step × G steps/s ÷ bf16 matmul FLOP/s.",
            "",
            "| contender | images/s | × gan_lab | G steps/s | GFLOP per step | share of bf16 limit | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, x in c.items():
            ratio = f"{x['images_per_s']['median'] / ref:.2f}×" if ref and "images_per_s" in x else "—"
            share = _range(x["bf16_limit_fraction"], 1, 100, " %") if "bf16_limit_fraction" in x else "—"
            gflop = f"{x['flops_per_step'] / 1e9:.1f}" if "flops_per_step" in x else "—"
            steps = f"{x['g_steps_per_s']['median']:.1f}" if "g_steps_per_s" in x else "—"
            lines.append(f"| {name}: {x['description']} | {_rate(x)} | {ratio} | {steps} | {gflop} | {share} | "
                         f"{_status(x)} |")  # fmt: skip
        lines += ["", f"gan_lab resolved: {_speed(dcgan.get('speed'))}.", ""]
    lines += _profile_lines(results.get("profile") or {})
    preset = results.get("preset")
    if preset:
        lines += _preset_lines(preset, (dcgan or {}).get("contenders", {}).get("classic", {}), shape, results)
    jobs = results.get("jobs")
    if jobs:
        lines += [
            f"**d. Jobs sharing the GPU** (`-m hydra/launcher=joblib hydra.launcher.n_jobs=N`, DCGAN with the settings "
            f"of b, each job `{' '.join(jobs['per_job'])}`): aggregate = images of all jobs ÷ time from the first "
            f"job's first batch to the last job's last step; steady = the sum of the jobs' rates while all of them "
            f"train past their first {s['warmup']} steps (compilation, graph capture, autotuning).",
            "",
            "| jobs at once | aggregate images/s | × 1 job | steady aggregate images/s | per-job images/s | completed "
            "| command s |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, run in jobs["runs"].items():
            lines.append(_job_row(n, run))
        lines.append("")
        if jobs.get("memory"):
            m = jobs["memory"]
            lines += [
                f"How many fit: one job alone had {m['per_job_gib']:.2f} GiB of the GPU's {m['gpu_gib']:.0f} GiB in "
                "use at its end (its CUDA context, the dataset on the device, weights, optimizer state, the "
                f"allocator's cache), so about {m['jobs_that_fit']} such jobs fit in memory; how many pay is the "
                "aggregate above.",
                "",
            ]
    sweep = results.get("sweep")
    if sweep:
        runs = sweep["runs"]
        cells = [f"n_jobs={n}: {r['command_s']:.0f} s ({r.get('completed', 0)} of {len(sweep['arms'])} completed)"
                 if "command_s" in r else f"n_jobs={n}: {r.get('skipped') or r.get('error')}" for n, r in runs.items()]  # fmt: skip
        ratio = sweep.get("time_ratio")
        verdict = (
            f"{ratio:.2f}× (target ≤ {sweep['target_max']}×: {_check(ratio <= sweep['target_max'])})"
            if ratio
            else "—"
        )
        projected = sweep.get("projected")
        if projected:
            verdict += (
                f"; projected to arms of {projected['steps_per_arm']:,} G steps (100 CIFAR-10 epochs: start-up as "
                f"measured, the added steps at the measured steady rates): {projected['time_ratio']:.2f}×"
            )
        lines += [
            f"**Lr sweep** (the preset's arms {', '.join(sweep['arms'])}; {sweep['steps_per_arm']} G steps each; whole "
            f"command, start-up included): {'; '.join(cells)}; time ratio {verdict}.",
            "",
        ]
        together = sweep.get("in_one_process") or {}
        if together:
            ratios = "; ".join(f"{name}: {ratio:.2f}×" for name, ratio in together.items())
            lines += [
                f"The same arms trained together in one process (part a's plain graphed loop; training only, the "
                f"time ratio to the arms one after another = plain_graphed's images/s ÷ all arms' images/s): "
                f"{ratios}.",
                "",
            ]
    lines += [f"- {note}" for note in results.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def _job_row(n: str, run: dict[str, Any]) -> str:
    if "images_per_s" not in run:
        return (
            f"| {n} | — | — | — | — | {run.get('completed', 0)} | {run.get('skipped') or run.get('error')} |"
        )
    per_job = ", ".join(f"{j['images_per_s']:.0f}" for j in run["jobs"] if "images_per_s" in j)
    vs = f"{run['images_per_s_vs_one_job']:.2f}×" if "images_per_s_vs_one_job" in run else "—"
    steady = f"{run['steady_images_per_s']:,.0f}" if "steady_images_per_s" in run else "—"
    if "steady_images_per_s_vs_one_job" in run:
        steady += f" ({run['steady_images_per_s_vs_one_job']:.2f}×)"
    return (
        f"| {n} | {run['images_per_s']:,.0f} | {vs} | {steady} | {per_job} | {run['completed']} of "
        f"{len(run['jobs'])} | {run['command_s']:.0f} |"
    )


def _profile_lines(profiles: dict[str, Any]) -> list[str]:
    """torch.profiler's summary per contender: launches and time per generator step, the top operators."""
    if not profiles:
        return []
    lines = ["torch.profiler, per generator step (one D + one G step), after the warm-up:", "",
             "| contender | kernel launches | CUDA graph launches | wall ms | device busy ms | top by device time |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, p in profiles.items():
        if "g_steps" not in p:
            lines.append(f"| {name} | {p.get('skipped') or p.get('error')} | | | | |")
            continue
        top = ", ".join(f"{t['name']} {t['self_device_ms_per_step']} ms" for t in p["top_by_device_time"][:3])
        lines.append(
            f"| {name} | {p['kernel_launches_per_step']} | {p['graph_launches_per_step']} | "
            f"{p['wall_ms_per_step']} | {p['device_busy_ms_per_step']} | {top or '—'} |"
        )
    return [*lines, ""]

#!/usr/bin/env bash
# The GPU check, on the GPU machine, from the checkout, without network (prepare .device/ first, on the
# development machine: benchmarks/gpu_prepare.sh). With the device tool: carry [".device"], command
# `bash benchmarks/gpu_check.sh`, timeout_s 540. Under 8 minutes (470 s at most):
#   1. source .device/setup.sh: installs the wheels of .device/ into /tmp/site, extracts CIFAR-10 to
#      /tmp/cifar/train (~20 s; at most 120 s);
#   2. the GPU tests: pytest -k "gpu or cuda" (they skip on a CPU) (~70-90 s; at most 120 s);
#   3. python -m benchmarks gpu (~5.5 min; its --time-limit is what is left, at most 330 s), with
#      pytorch/examples' dcgan/main.py as part b's yardstick where gpu_prepare.sh put it in .device/;
#   4. results.json, results.md, the pytest summary and this script's log into $OUT when it is set.
# Every step has its own timeout, so one hang cannot eat the machine's 10 minutes; the exit status is non-zero
# when a step failed, after the copy.
set -u
cd "$(dirname "$0")/.."
limit=${GPU_CHECK_LIMIT:-470} # seconds for all of it (the issue: under 8 minutes); less for a shorter check
results=benchmarks/gpu
work=$(mktemp -d)
exec 3>&1 > >(tee "$work/gpu_check.log") 2>&1
tee_pid=$!
say() { printf '[gpu_check %3d s] %s\n' "$SECONDS" "$*"; }
failed=0

# 1. Setup, in a subshell under a timeout; the variables it exports are carried over into this shell.
say "setup: source .device/setup.sh"
if [ ! -f .device/setup.sh ]; then
  say "no .device/setup.sh: run benchmarks/gpu_prepare.sh on the development machine and carry .device"
  exit 1
fi
timeout 120 bash -c 'export -p | sort > "$1.before"; source .device/setup.sh || exit $?
  export -p | sort > "$1.after"; comm -13 "$1.before" "$1.after" > "$1"' _ "$work/env.sh"
rc=$?
[ "$rc" -eq 0 ] || { say "setup failed (exit $rc)"; failed=1; }
# shellcheck disable=SC1091
[ -f "$work/env.sh" ] && source "$work/env.sh"
py=$(command -v python3 || command -v python)
# For the sweep target: can jobs in separate processes run kernels at once here (NVIDIA MPS)? Only looked at.
say "GPU, compute mode, MIG: $(nvidia-smi --query-gpu=name,compute_mode,mig.mode.current --format=csv,noheader \
  2>/dev/null | head -1)"
say "MPS control daemon: $(command -v nvidia-cuda-mps-control || echo 'not installed')"

# 2. The GPU tests (names with gpu or cuda; they skip on a CPU).
say "GPU tests: pytest -k 'gpu or cuda'"
if "$py" -c "import pytest" 2>/dev/null; then
  # Six at once when pytest-xdist is there: most of these tests wait for torch.compile, on the CPU.
  parallel=$("$py" -c "import xdist" 2>/dev/null && echo "-n 6")
  # shellcheck disable=SC2086
  timeout 120 "$py" -m pytest -q -rs --durations=15 $parallel -k "gpu or cuda" -p no:cacheprovider \
    --continue-on-collection-errors tests/ benchmarks/tests/ > "$work/pytest.txt" 2>&1
  rc=$?
  tail -n 45 "$work/pytest.txt"
  [ "$rc" -eq 124 ] && say "pytest timed out after 120 s"
  [ "$rc" -eq 0 ] || { say "pytest exit $rc"; failed=1; }
else
  say "pytest is not installed here: GPU tests not run" | tee "$work/pytest.txt"
  failed=1
fi

# 3. The benchmark, with what is left of the time (it skips the parts that would not fit, and says so).
left=$((limit - SECONDS - 20))
budget=$((left - 30 < 330 ? left - 30 : 330))
say "python -m benchmarks gpu --time-limit $budget"
if [ "$budget" -ge 60 ]; then
  extra=() # pytorch/examples' script, where gpu_prepare.sh found it: part b's yardstick
  [ -f .device/pytorch_examples_dcgan_main.py ] && extra=(--examples-script .device/pytorch_examples_dcgan_main.py)
  # shellcheck disable=SC2086 # GPU_BENCH_ARGS: more options for the bench, e.g. "--repeats 2"
  timeout "$left" "$py" -m benchmarks gpu --data-root /tmp/cifar/train --out "$results" --time-limit "$budget" \
    ${extra[@]+"${extra[@]}"} ${GPU_BENCH_ARGS:-}
  rc=$?
  [ "$rc" -eq 0 ] || { say "bench exit $rc"; failed=1; }
else
  say "too little time left for the benchmark ($left s)"
  failed=1
fi

# 4. What comes back: the results (written after every part, so a timeout still leaves them) and the logs.
say "done in $SECONDS s (failed=$failed)"
exec 1>&3 2>&1 3>&- # ends tee's input: wait for it to finish the log before copying it
wait "$tee_pid" 2>/dev/null
if [ -n "${OUT:-}" ]; then
  cp "$results/results.json" "$results/results.md" "$work/pytest.txt" "$work/gpu_check.log" "$OUT/" ||
    echo "[gpu_check] some files were missing: $(ls "$results" "$work" | tr '\n' ' ')"
fi
exit "$failed"

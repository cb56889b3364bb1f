#!/usr/bin/env bash
# Run HERE, on the development machine (it has the package registry), before a GPU session: fills the
# git-ignored .device/ of this checkout with what the GPU machine lacks and has no network to fetch.
#   1. ../shared/gpu/prepare.sh: wheels of hydra-core, omegaconf, antlr4, torch-fidelity; CIFAR-10's training
#      JPEGs (.device/cifar_train.tar.gz, 16 MB); setup.sh, which installs the wheels there;
#   2. the wheels `python -m benchmarks gpu` needs besides: hydra-joblib-launcher and joblib, at the versions
#      installed here (the ones the tests passed with; both pure Python);
#   3. pytorch/examples' dcgan/main.py, unmodified, with its commit, from a local snapshot of pytorch/examples
#      (PYTORCH_EXAMPLES: a git directory; the agents' `fetch github:pytorch/examples` puts one in
#      /work/.mirror): the bench's yardstick for the study preset (issue 14: >= 3x its images/s). gan_lab does
#      not ship or download it; without a snapshot the bench compares the preset with the classic design only;
#   4. checks that .device/ stays under the device tool's 64 MiB for carried paths.
# Then, with the device tool: carry [".device"], command `bash benchmarks/gpu_check.sh`, timeout_s 540.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared=${GAN_LAB_SHARED:-$root/../shared}
py=${PYTHON:-$root/.venv/bin/python}

bash "$shared/gpu/prepare.sh"

version() { "$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
rm -f .device/hydra_joblib_launcher-*.whl .device/joblib-*.whl
"$py" -m pip download -q --no-deps --only-binary=:all: -d .device \
  "hydra-joblib-launcher==$(version hydra-joblib-launcher)" "joblib==$(version joblib)"

examples=${PYTORCH_EXAMPLES:-/work/.mirror/pytorch+examples/repo}
rm -f .device/pytorch_examples_dcgan_main.*
if git -C "$examples" rev-parse --verify -q HEAD:dcgan/main.py > /dev/null 2>&1; then
  git -C "$examples" show HEAD:dcgan/main.py > .device/pytorch_examples_dcgan_main.py
  git -C "$examples" rev-parse HEAD > .device/pytorch_examples_dcgan_main.commit
else
  echo "gpu_prepare.sh: no snapshot of pytorch/examples at $examples (set PYTORCH_EXAMPLES): the bench will" \
    "compare the study preset with the classic design only" >&2
fi

ls -l .device
bytes=$(du -sb .device | cut -f1)
limit=$((64 * 1024 * 1024))
echo ".device: $((bytes / 1024 / 1024)) MiB of the $((limit / 1024 / 1024)) MiB that may be carried"
if [ "$bytes" -ge "$limit" ]; then
  echo "gpu_prepare.sh: error: .device/ holds $bytes bytes, over the 64 MiB the device tool carries" >&2
  exit 1
fi

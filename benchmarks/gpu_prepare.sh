#!/usr/bin/env bash
# Run here, on a machine with the package registries, before a lent GPU session: the GPU image
# has torch, torchvision, pytorch-lightning and torchmetrics but not the rest of the stack, and
# reaches no registry and no ../shared. Writes two ignored folders for the device tool's carry:
#   .whl/       the lock's pure-Python wheels the image lacks (monai, lightly, hydra-core, ...)
#   .gpu_data/  PneumoniaMNIST, RetinaMNIST, VesselMNIST3D, MSD Hippocampus and the MedMNIST v2
#               baseline table from ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=$(realpath -m "${1:-../shared/data}")
pins=$(grep -E '^(monai|lightly|hydra-core|omegaconf|antlr4-python3-runtime|nibabel|pydicom)==' requirements/lock.txt)
rm -rf .whl .gpu_data
mkdir -p .whl .gpu_data
# antlr4-python3-runtime is published as a source archive only: build its (pure-Python) wheel here.
# shellcheck disable=SC2086
"$PY" -m pip wheel --quiet --no-deps --disable-pip-version-check -w .whl $pins
cp -r "$DATA/pneumoniamnist" "$DATA/retinamnist" "$DATA/vesselmnist3d" "$DATA/msd_hippocampus" "$DATA/medmnist_v2_baselines.md" .gpu_data/
ls .whl
du -sh .whl .gpu_data

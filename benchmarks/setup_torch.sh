#!/usr/bin/env bash
# The PyTorch side of benchmarks/vs_torch.py lives in its own environment: PyTorch's CPU wheel
# exists here for Python 3.11 (under 3.12 pip would fetch the CUDA build, ~4 GB). Downloads only
# packages (torch CPU, numpy; about 200 MB). Usage: bash benchmarks/setup_torch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${TORCH_BASE_PYTHON:-python3.11}
[ -x .venv-torch/bin/python ] || "$py" -m venv .venv-torch
.venv-torch/bin/python -m pip install --quiet torch==2.13.0 numpy
.venv-torch/bin/python -c "import torch; print('PyTorch', torch.__version__, 'ready in .venv-torch')"

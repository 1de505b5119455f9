#!/usr/bin/env bash
# CompressAI 1.2.8 (the bmshj2018 factorized-prior baseline) in an environment of its own, never varilab's:
# it pins numpy<2 and imports torchvision. The registry's torchvision 0.28.0 (torch 2.13's partner) is a CUDA build
# whose compiled ops cannot load beside the CPU torch, and its import then fails on "operator torchvision::nms does
# not exist"; `torchvision_ops.py`, loaded first by a .pth file, declares the two operators it registers (no
# kernels), so the import succeeds. CompressAI's models never call them; torchvision.ops.nms itself still raises.
set -euo pipefail
VENV=${1:-.venv-compressai}
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q torch==2.13.0 "numpy<2"
"$VENV/bin/python" -m pip install -q --no-deps torchvision==0.28.0
"$VENV/bin/python" -m pip install -q compressai==1.2.8 "numpy<2" torch==2.13.0 torchvision==0.28.0
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$HERE/torchvision_ops.py" "$SITE/"
echo "import torchvision_ops" > "$SITE/torchvision_ops.pth"
"$VENV/bin/python" -c "from compressai.models import FactorizedPrior; import compressai; print('compressai', compressai.__version__)"

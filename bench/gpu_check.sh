#!/usr/bin/env bash
# Checks for a machine with a CUDA GPU (not part of CI, which has none): the whole test suite with
# the GPU visible, the CLI end to end on the GPU, and the step benchmark on the GPU.
# Uses the python3 on PATH (which must have torch with CUDA and the dependencies); results in $OUT.
set -u
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
echo "== tests"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.log" | tail -25
echo "== CLI on the GPU"
R=/tmp/gpu-run
python3 -m varilab train --model vae --data digits --latent-dim 8 --hidden 256 --epochs 40 --batch-size 64 \
    --lr 2e-3 --seed 0 --diagnostics --out "$R" --force 2>&1 | tail -3
python3 -m varilab eval "$R" --nll --k 1,10,100,1000 2>&1 | tail -8
python3 -m varilab diagnose "$R" 2>&1 | head -12
python3 -m varilab report "$R" --force && cp "$R/report.html" "$OUT/report-gpu.html"
echo "== step benchmark on the GPU"
python3 bench/bench_step.py --device cuda > "$OUT/step_cuda.json" && python3 - "$OUT/step_cuda.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for c in r["contenders"]:
    print(f"{c['name']:>15}: median {c['median_s'] * 1e6:.0f} us/step, ratio {c['ratio']:.3f}")
print("device:", r["settings"]["device"])
PY

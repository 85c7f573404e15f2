#!/usr/bin/env bash
# GPU checks of napari-sciz (issue 12), under 8 minutes on one GPU:
#   CUDA correctness (a GPU-fitted file decodes to the same values on CPU and GPU),
#   mixed precision (float32 / TF32 / bfloat16 fits: time and PSNR),
#   a 64x512x512 uint16 volume at 64x (default mode and neural field: time, ratio, PSNR).
# The results replace the "GPU checks" section of docs/benchmarks.md; the raw record goes to
# bench_out/gpu.json. Extra arguments go to `python -m napari_sciz.bench.gpu` (e.g. --budget 60).
# Without a GPU: scripts/gpu_check.sh --device cpu --quick  (a smoke test, nothing written).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if [[ " $* " == *" --quick "* ]]; then
    exec "$PYTHON" -m napari_sciz.bench.gpu "$@"
fi
mkdir -p bench_out
exec "$PYTHON" -m napari_sciz.bench.gpu --out docs/benchmarks.md --json bench_out/gpu.json "$@"

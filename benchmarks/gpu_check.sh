#!/usr/bin/env bash
# GPU check for sessions lent a CUDA machine: one prepared run, under 8 minutes.
#
#   1. the GPU-marked tests (batcher staging on CUDA, NVML telemetry, engine GPU tests);
#   2. the serving benchmark on CUDA: TensorRT when torch_tensorrt imports, else compiled
#      PyTorch (the engine's backend "auto" picks), 6 s per load point.
#
# Results go to benchmarks/results/serving-gpu.{json,png} and, when $OUT is set (the
# device runner's output folder), are copied there with the logs.
#
# The lent GPU machines carry torch but reach no package index, and the runner carries
# at most 64 MiB of ignored files. The project's other wheels for Python 3.11 come to
# ~200 MB (PyAV alone ~104 MB; without it ~90 MB), so check first what the device
# already has (`python3 -c "import aiohttp, pydantic, prometheus_client, asyncpg,
# redis, cryptography, pytest"`) and carry only the missing ones as a folder
# .gpu-deps/ (`pip install --target .gpu-deps --no-deps ...`). PyAV is not needed:
# the runtime imports it only when a camera starts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/runtime:$PWD/operator:$PWD/devenv${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .gpu-deps ]; then export PYTHONPATH="$PYTHONPATH:$PWD/.gpu-deps"; fi
export PYTHONUNBUFFERED=1
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR" benchmarks/results
start=$(date +%s)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
try:
    import torch_tensorrt
    print("torch_tensorrt", torch_tensorrt.__version__)
except Exception as exc:  # noqa: BLE001 - report and go on with compiled PyTorch
    print("torch_tensorrt not importable:", exc)
PY

echo "== GPU-marked tests"
set +e
timeout 170 python -m pytest -m gpu tests/runtime -q -p no:cacheprovider 2>&1 \
    | tee "$OUT_DIR/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
set -e

echo "== serving benchmark on CUDA"
ray_flag=""
python -c "import ray.serve" 2>/dev/null || ray_flag="--no-ray"
set +e
timeout 300 python benchmarks/serving.py --seconds 6 $ray_flag \
    --out benchmarks/results/serving-gpu.json 2>&1 | tee "$OUT_DIR/gpu-bench.log"
bench_rc=${PIPESTATUS[0]}
set -e
if [ "$OUT_DIR" != "benchmarks/results" ]; then
    cp benchmarks/results/serving-gpu.* "$OUT_DIR/" 2>/dev/null || true
fi
echo "tests rc=$tests_rc bench rc=$bench_rc in $(( $(date +%s) - start ))s"
exit $(( tests_rc != 0 || bench_rc != 0 ))

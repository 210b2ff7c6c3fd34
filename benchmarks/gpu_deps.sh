#!/usr/bin/env bash
# Prepares .gpu-deps/ (git-ignored) for a run on a lent GPU machine, which reaches no
# package index: wheels for its interpreter (CPython 3.12, manylinux x86_64) of what the
# machine lacks, and nothing else. The device runner carries at most 64 MiB (working
# tree included); these come to ~45 MB, PyAV (35 MB) being most of it.
# gpu_check.sh unpacks on the device only the wheels whose module does not import there.
#
#   bash benchmarks/gpu_deps.sh        # then: run(carry=[".gpu-deps"], "bash benchmarks/gpu_check.sh")
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${ITS_CACHE_DIR:-$HOME/.cache/its-analytics}/uv-tool/bin/pip"
[ -x "$PIP" ] || PIP="python3 -m pip"
mkdir -p .gpu-deps
$PIP download -q -d .gpu-deps --python-version 3.12 --only-binary=:all: --no-deps \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "av>=17" "pydantic>=2.9" pydantic-core annotated-types typing-inspection pyyaml \
  pytest pluggy iniconfig pytest-asyncio pytest-timeout \
  "asyncpg>=0.32,<0.33" "redis>=8,<9"
du -sh .gpu-deps
ls .gpu-deps

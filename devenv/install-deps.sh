#!/usr/bin/env bash
# Installs what this project needs on a fresh Debian machine, and does nothing that is
# already done: Debian packages (PostgreSQL, Redis, GStreamer's RTSP server, ffmpeg,
# Go, g++), the Python packages (into .venv with uv; torch is a multi-GB CUDA wheel,
# downloaded once into uv's cache and then reused), and the Go-built control plane
# (cached in ~/.cache/its-analytics). Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
CACHE="${ITS_CACHE_DIR:-$HOME/.cache/its-analytics}"
mkdir -p "$CACHE"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && id postgres >/dev/null 2>&1 || need+=(postgresql)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
{ [ -e /usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib ] &&
  [ -e /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstvideoparsersbad.so ]; } ||
  need+=(gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
         gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
         gstreamer1.0-libav)
/usr/bin/python3 -c 'import gi' 2>/dev/null || need+=(python3-gi)
"${ITS_BASE_PYTHON:-python3}" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v go >/dev/null || need+=(golang-go)
command -v g++ >/dev/null || need+=(g++)
# promtool and a private Prometheus check the monitoring overlay's rules and queries.
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "[install-deps] apt-get install ${need[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged servers; this project runs its own on other ports.
  for svc in postgresql redis-server prometheus; do ($SUDO service "$svc" stop >/dev/null 2>&1 || true); done
fi

# Python packages go into the project's own virtual environment (.venv), never into the
# system interpreter (pip reported conflicts with packages the image ships). uv creates it
# and installs from its cache (~/.cache/uv), so torch's multi-GB wheel is downloaded once
# per machine. uv itself lives in a bootstrap venv under $CACHE, not in the system site.
VENV="${ITS_VENV:-.venv}"
BASE_PYTHON="${ITS_BASE_PYTHON:-python3}"
UV="$CACHE/uv-tool/bin/uv"
if ! "$UV" --version >/dev/null 2>&1; then
  echo "[install-deps] bootstrapping uv in $CACHE/uv-tool" >&2
  rm -rf "$CACHE/uv-tool"
  "$BASE_PYTHON" -m venv "$CACHE/uv-tool"
  "$CACHE/uv-tool/bin/python" -m pip install -q uv
fi
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[install-deps] creating $VENV" >&2
  rm -rf "$VENV"
  "$UV" venv -q "$VENV" --python "$("$BASE_PYTHON" -c 'import sys; print(sys.executable)')"
fi
PY="$VENV/bin/python"
# Reinstall when pyproject.toml changed, when something is missing, or when the editable
# install points at another checkout.
stamp="$VENV/.its-deps-$(sha256sum pyproject.toml | cut -c1-16)"
here_ok() {
  "$PY" - <<'PY' 2>/dev/null
import os, sys
import asyncpg, kopf, torch  # noqa: F401
import its_operator, its_runtime
here = os.path.realpath(os.getcwd())
sys.exit(0 if all(os.path.realpath(m.__file__).startswith(here) for m in (its_operator, its_runtime)) else 1)
PY
}
if [ ! -e "$stamp" ] || ! here_ok; then
  echo "[install-deps] uv pip install -e '.[operator,runtime,dev]' into $VENV" >&2
  VIRTUAL_ENV="$VENV" "$UV" pip install -q -e '.[operator,runtime,dev]'
  rm -f "$VENV"/.its-deps-*
  touch "$stamp"
fi

bash devenv/its_devenv/build-control-plane.sh all
# kstatus (Flux's status library) as a tiny Go tool the status tests run; cached likewise.
"$PY" -m its_devenv.kstatus build >/dev/null
# The Prometheus Operator's and KEDA's real CRDs (pinned Go modules) the overlay dry runs use.
"$PY" -m its_devenv.third_party_crds >/dev/null

#!/usr/bin/env bash
# Create (or re-use) .venv with the CPU OpenMMLab stack mmdms is tested on.
#
# Idempotent: when .venv/.mmdms-stamp matches the hash of the inputs below, it does nothing.
# The mmcv wheel (its CPU ops take ~12 min to compile on 2 cores) is cached in
# ${MMDMS_CACHE:-~/.cache/mmdms}/wheels so a second set-up on the same machine takes minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY_BOOT="${PYTHON:-python3.11}"
CACHE="${MMDMS_CACHE:-$HOME/.cache/mmdms}"
WHEELS="$CACHE/wheels"
PINS="$ROOT/requirements/cpu_pins.txt"
STAMP="$VENV/.mmdms-stamp"

inputs_hash() {
  cat "$ROOT/tools/setup_env.sh" "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
}
HASH="$(inputs_hash)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "[setup_env] .venv is up to date"
  exit 0
fi

log() { echo "[setup_env] $*"; }
START=$(date +%s)

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $PY_BOOT"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q -c "$PINS")

# Build tools first: mmcv's setup.py and mmengine's config loader import pkg_resources
# (removed in setuptools 81), and an isolated build would fetch a setuptools without it.
"${PIP[@]}" --upgrade pip wheel ninja setuptools==80.9.0 numpy==1.26.4

# torch: an exact pin picks the local CPU wheel; a range would pull the CUDA build and nvidia-* wheels.
"${PIP[@]}" torch==2.13.0
# torchvision's wheel on the registry is CUDA-linked; --no-deps keeps it from replacing torch.
# mmdms.compat makes it importable with CPU torch.
"${PIP[@]}" --no-deps torchvision==0.28.0

# mmcv 2.0.1 with its ops (mmdet/mmyolo need nms), compiled for CPU once and cached.
mkdir -p "$WHEELS"
MMCV_WHEEL="$(ls "$WHEELS"/mmcv-2.0.1-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
  log "building mmcv 2.0.1 with CPU ops (about 12 minutes on 2 cores)"
  BUILD="$(mktemp -d)"
  trap 'rm -rf "$BUILD"' EXIT
  "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.0.1 -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-2.0.1.tar.gz -C "$BUILD"
  # torch >= 2.1 headers: "#error C++17 or later compatible compiler is required to use ATen."
  sed -i 's/-std=c++14/-std=c++17/g' "$BUILD/mmcv-2.0.1/setup.py"
  (cd "$BUILD/mmcv-2.0.1" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel -q --no-deps --no-build-isolation . -w "$BUILD/dist")
  cp "$BUILD"/dist/mmcv-2.0.1-*.whl "$WHEELS"/
  MMCV_WHEEL="$(ls "$WHEELS"/mmcv-2.0.1-*.whl | head -n1)"
fi
"${PIP[@]}" --no-deps "$MMCV_WHEEL"
# mmcv's own runtime dependencies (installed without it above so pip never rebuilds mmcv).
"${PIP[@]}" addict packaging Pillow pyyaml yapf opencv-python==4.11.0.86

# OpenMMLab packages. None declares torch/mmcv, so nothing CUDA comes with them.
# optional.txt: the benchmarks' profiler, the ONNX export (onnx, onnxruntime) and the language
# models (transformers); the tests use the last two.
"${PIP[@]}" -r requirements/mminstall.txt -r requirements/runtime.txt -r requirements/tests.txt \
  -r requirements/optional.txt
"${PIP[@]}" --no-deps --no-build-isolation -e .

BAD="$("$PY" -m pip list 2>/dev/null | grep -i -E '^(nvidia|cuda|triton)' || true)"
if [[ -n "$BAD" ]]; then
  echo "[setup_env] ERROR: CUDA packages were installed into a CPU environment:" >&2
  echo "$BAD" >&2
  echo "[setup_env] Fix: remove .venv and check requirements/cpu_pins.txt pins torch exactly." >&2
  exit 1
fi

"$PY" - <<'PY'
import importlib.metadata as md
import mmdms  # noqa: F401  (applies mmdms.compat; fails loudly if the stack does not import)
for name in ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmpretrain', 'mmdet', 'mmyolo',
             'mmrazor', 'numpy', 'scikit-learn', 'onnx', 'onnxruntime', 'transformers', 'mmdms'):
    print(f'[setup_env] {name:13s} {md.version(name)}')
from mmcv.ops import nms  # noqa: F401  (the compiled CPU ops are present)
PY
echo "$HASH" > "$STAMP"
log "done in $(( $(date +%s) - START )) s"

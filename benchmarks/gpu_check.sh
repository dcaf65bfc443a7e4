#!/usr/bin/env bash
# The teacher on an NVIDIA GPU through Triton: one script, under 5 minutes on a GPU host.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   GPU_CHECK_MODEL=DIR bash benchmarks/gpu_check.sh   # a teacher you already trained
#
# What it does, in order (each step prints what it measured or why it stopped):
#   1. checks the GPU (nvidia-smi) and the shared CrowdFlower data;
#   2. installs what it needs into .venv (make setup's requirements, then the CUDA build of
#      the pinned torch and onnxruntime-gpu from PyPI: the CPU wheels of a laptop install
#      cannot see a GPU);
#   3. takes the teacher from $GPU_CHECK_MODEL, else .freshlabel/teachers/crowdflower, else
#      trains one on the GPU for a bounded number of steps (quality is not the point here:
#      speed is, and speed does not depend on how long the head trained);
#   4. exports it into a temporary Triton repository and serves it with the `gpu` model
#      config (KIND_GPU instances; `freshlabel teacher export` writes configs/gpu.pbtxt);
#   5. prints pairs/s and p50/p99 latency at client concurrency 1/16/64/256 for fp32 and
#      fp16 through Triton, the in-process GPU figure, and the CPU figure on the same host.
#
# Results: paste the printed tables under "Teacher on a GPU" in docs/benchmarks.md with the
# host's GPU model (the script prints nvidia-smi's line). Nothing here is needed on a CPU host.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
DATA=${FRESHLABEL_TEACHER_DATA:-../shared/data/crowdflower/train.parquet}
MODEL=${GPU_CHECK_MODEL:-.freshlabel/teachers/crowdflower}
PAIRS=${GPU_CHECK_PAIRS:-4096}
OUT_DIR=${GPU_CHECK_OUT:-.freshlabel}
mkdir -p "$OUT_DIR"
TORCH_VERSION=$(grep -E '^torch==' requirements/platform.lock | cut -d= -f3)
ORT_VERSION=$(grep -E '^onnxruntime==' requirements/platform.lock | cut -d= -f3 || true)
started=$(date +%s)
step() { echo "[gpu_check +$(($(date +%s) - started))s] $*"; }

step "1/5 GPU and data"
if ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check: no nvidia-smi on this host; run it on a machine with an NVIDIA GPU" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -f "$DATA" ]; then
    echo "gpu_check: no training data at $DATA; set FRESHLABEL_TEACHER_DATA to a CrowdFlower parquet" >&2
    exit 2
fi

step "2/5 install (requirements, CUDA torch $TORCH_VERSION, onnxruntime-gpu)"
make -s setup
# The lock pins torch's version; a CPU build of it (a local "+cpu" wheel) cannot see the GPU,
# so replace it with the same version's CUDA build from the host's index (TORCH_INDEX_URL to
# choose one, e.g. https://download.pytorch.org/whl/cu128).
if [ "$("$PY" -c 'import torch; print(torch.version.cuda or "")')" = "" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
fi
if [ -n "$ORT_VERSION" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "onnxruntime-gpu==$ORT_VERSION" || \
        step "onnxruntime-gpu $ORT_VERSION not installable: the ONNX rows run on CPU providers"
fi
"$PY" - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device after installing its CUDA build")
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
EOF

step "3/5 teacher"
if [ ! -f "$MODEL/manifest.json" ]; then
    MODEL=$(mktemp -d)/teacher
    "$PY" -m freshlabel.cli teacher train --data "$DATA" --columns crowdflower --out "$MODEL" \
        --device cuda --epochs 1 --max-steps 300
fi
echo "teacher: $MODEL"

step "4/5 + 5/5 Triton (gpu config) fp32 and fp16, then the CPU figure on this host"
"$PY" -m benchmarks.bench_teacher --model "$MODEL" --data "$DATA" --pairs "$PAIRS" \
    --device cuda --precision fp32,fp16 --concurrency 1,16,64,256 --json "$OUT_DIR/gpu_check.json"
"$PY" -m benchmarks.bench_teacher --model "$MODEL" --data "$DATA" --pairs 512 \
    --device cpu --concurrency 64 --skip-in-process --json "$OUT_DIR/gpu_check_cpu.json"
step "the served embeddings (the labeler's drift monitor reads them) against in-process, fp32 and fp16"
for precision in fp32 fp16; do
    "$PY" -m benchmarks.gpu_embeddings_check --model "$MODEL" --data "$DATA" --precision "$precision" \
        || step "served $precision embeddings differ from in-process ones (see above)"
done
step "done: paste both tables into docs/benchmarks.md (GPU model above); JSON in $OUT_DIR"

#!/usr/bin/env bash
# Everything d2v needs a GPU to check, in one command that fits a few minutes of a lent H100/H200,
# writing every result into one Markdown file:
#   1. pytest -m gpu: the Triton kernels against the reference on the models' shapes in fp32/fp16/bf16,
#      forward and backward, the dispatch's first-call check, and `d2v serve` on CUDA (bf16) against
#      the CPU (tests/kernels/test_gpu_kernels.py, tests/server/test_gpu_serving.py);
#   2. bench/kernels.py: the kernels against every SDPA backend that accepts the case and FlexAttention,
#      and the decoder block against eager PyTorch;
#   3. bench/serve.py on CUDA: the demo models and base-size models, d2v batched and batch size 1
#      against a plain per-request service.
#
#   bash bench/gpu_check.sh --prepare          # here, with the network: wheels the GPU image lacks and the
#                                              # benchmark inputs, into .gpu/ (ignored by git)
#   bash bench/gpu_check.sh --out FILE.md      # on the GPU machine (carry .gpu along)
#   bash bench/gpu_check.sh --dry-run          # what a machine without a GPU can check of this script:
#                                              # syntax, GPU test collection, the benchmarks' arguments and
#                                              # a CPU smoke run of the attention benchmark's code paths
#
# The whole run fits --budget seconds (default 450, 7.5 minutes, wheel installation included): each step
# has its own time limit, cut to what is left of the budget, and a step with under 10 s left is skipped.
# A failed, timed-out or skipped step is recorded and the next one runs. Python: $PYTHON, else
# .venv/bin/python, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=run
OUT=gpu-check.md
BUDGET=450
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    --out) OUT=$2; shift ;;
    --budget) BUDGET=$2; shift
      [[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget takes whole seconds, not $BUDGET" >&2; exit 2; } ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (--prepare, --dry-run, --out FILE, --budget SECONDS)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "${PYTHON:-}" ]; then :; elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
GPU_DIR=.gpu
# what the GPU image (Python 3.12, torch, triton, numpy, scipy, pillow, pyarrow, sentencepiece, tokenizers,
# onnxruntime, httpx, ... already there) lacks for the server and its tests
WHEELS=(fastapi starlette pydantic pydantic-core annotated-types typing-inspection uvicorn httptools orjson
        python-multipart soundfile cffi pycparser jsonschema-rs)

prepare() {
  mkdir -p "$GPU_DIR/wheels"
  local pins=()
  for name in "${WHEELS[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null)
    pins+=("$name${version:+==$version}")
  done
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$GPU_DIR/wheels" "${pins[@]}" || { echo "gpu_check.sh: downloading wheels failed" >&2; exit 1; }
  "$PYTHON" bench/serve.py --save-inputs "$GPU_DIR/inputs.json" || exit 1
  du -sh "$GPU_DIR"
  echo "carry $GPU_DIR to the GPU machine, then: bash bench/gpu_check.sh --out \$OUT/gpu-check.md"
}

if [ "$MODE" = prepare ]; then prepare; exit 0; fi

: > "$OUT"
say() { printf '%s\n' "$@" >> "$OUT"; }
FAILED=0
# step TITLE SECONDS COMMAND...: runs the command under its time limit (cut to what is left of the
# budget), its output in a code block
step() {
  local title=$1 seconds=$2; shift 2
  local left=$((BUDGET - SECONDS))
  [ "$left" -lt "$seconds" ] && seconds=$left
  if [ "$seconds" -lt 10 ]; then
    say "## $title" "" "**skipped**: ${left} s of the ${BUDGET} s budget left" ""
    FAILED=$((FAILED + 1))
    echo "gpu_check.sh: $title: skipped (budget spent)" >&2
    return
  fi
  say "## $title" "" "\`$*\` (limit ${seconds} s)" "" '```'
  local start=$SECONDS
  timeout --kill-after=10 "$seconds" "$@" >> "$OUT" 2>&1
  local rc=$?
  say '```' ""
  if [ $rc -eq 0 ]; then say "ok in $((SECONDS - start)) s"; else
    FAILED=$((FAILED + 1))
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "**timed out** after $((SECONDS - start)) s"; else
      say "**failed** (exit $rc) after $((SECONDS - start)) s"; fi
  fi
  say ""
  echo "gpu_check.sh: $title: exit $rc ($((SECONDS - start)) s)" >&2
}

GPU_TESTS=(tests/kernels/test_gpu_kernels.py tests/server/test_gpu_serving.py)
say "# d2v GPU check" "" "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" ""

if [ "$MODE" = dry ]; then
  step "Script syntax" 10 bash -n "$0"
  step "GPU tests collect" 120 env TRITON_INTERPRET=0 "$PYTHON" -m pytest --collect-only -q -m gpu -p no:cacheprovider \
    "${GPU_TESTS[@]}"
  step "Kernel benchmark: roofline, and a smoke run on the CPU (every SDPA backend, FlexAttention)" 150 \
    "$PYTHON" bench/kernels.py --markdown --mode fwd --smoke
  step "Serving benchmark options" 60 "$PYTHON" bench/serve.py --help
  [ -f "$GPU_DIR/inputs.json" ] || say "note: $GPU_DIR/inputs.json is missing: run --prepare before the GPU run"
  echo "gpu_check.sh: dry run written to $OUT ($FAILED failed)" >&2
  exit $((FAILED > 0))
fi

# the GPU machine: its own Python (torch with CUDA) plus the carried wheels
if [ -d "$GPU_DIR/wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/d2v-site \
    "$GPU_DIR"/wheels/*.whl >> "$OUT" 2>&1 || say "installing the carried wheels failed"
  export PYTHONPATH="$PWD:/tmp/d2v-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
INPUTS=()
[ -f "$GPU_DIR/inputs.json" ] && INPUTS=(--inputs "$GPU_DIR/inputs.json")

step "Machine" 20 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
  $PYTHON -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)'"
step "GPU tests (pytest -m gpu)" 170 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider -rs "${GPU_TESTS[@]}"
step "Kernels against SDPA, FlexAttention and eager (bf16)" 110 "$PYTHON" bench/kernels.py --markdown --reps 20
step "Serving on CUDA: demo models" 60 "$PYTHON" bench/serve.py --models models "${INPUTS[@]}" \
  --concurrency 1 16 64 --baseline-concurrency 16 --seconds 2 --configs torch torch-bs1 plain
step "Serving on CUDA: base-size models (768 x 12)" 75 "$PYTHON" bench/serve.py --size base "${INPUTS[@]}" \
  --concurrency 1 16 64 --baseline-concurrency 16 --seconds 2 --configs torch torch-bs1 plain
say "total: $SECONDS s of the $BUDGET s budget"
echo "gpu_check.sh: results in $OUT ($FAILED step(s) failed, timed out or skipped; $SECONDS s)" >&2
exit $((FAILED > 0))

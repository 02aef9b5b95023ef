#!/usr/bin/env bash
# One short run for a lent GPU machine (issue 12): the forward table at 1024^2 in float32 and
# bfloat16, then the conformance suite on the GPU, both backends. Results go to $OUT (default
# ./gpu-results): forward.{json,md}, conformance.{json,md} and the logs. Needs the project's
# dependencies with CUDA builds of jax and torch in $PYTHON (default: python3).
# Usage: OUT=/tmp/out PYTHON=.venv/bin/python benchmarks/gpu.sh [preset]
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not
OUT=${OUT:-gpu-results}
PRESET=${1:-lacss_resnet50}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
"$PYTHON" -c "import jax, torch, keras; print(jax.devices(), torch.cuda.is_available(), keras.__version__)" \
  >>"$OUT/gpu.txt" 2>&1
# Forward: about 2-5 minutes (one first call per variant and dtype, then 20 timed calls).
timeout 420 "$PYTHON" benchmarks/forward.py --device gpu --preset "$PRESET" --size 1024 \
  --repeats 20 --dtypes float32 bfloat16 \
  --variants jax torch_channels_first torch_channels_last jax_fused torch_fused \
  --output "$OUT/forward" >"$OUT/forward.log" 2>&1
echo "forward: exit $?" | tee -a "$OUT/status.txt"
# Conformance with TF32 off (--device gpu fails if a backend sees no GPU); torch.compile off to
# keep it short.
CI=1 LACSS_TORCH_COMPILE=0 timeout 420 "$PYTHON" -m conformance --device gpu \
  --output "$OUT/conformance" >"$OUT/conformance.log" 2>&1
echo "conformance: exit $?" | tee -a "$OUT/status.txt"

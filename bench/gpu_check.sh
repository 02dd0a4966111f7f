#!/usr/bin/env bash
# Real-scale cost of the deep models on one CUDA GPU: one epoch of each full-profile architecture
# (CamemBERT-base size at max_length 256 / batch 16, ResNet50 at 224 px / batch 64; pretrained
# weights when on disk, random init otherwise) on a generated 85k-row catalog with 224 px JPEGs,
# then the library's own train/predict on 2,000 rows as an end-to-end CUDA check.
# Prints samples/s and peak GPU memory; writes JSON to $1 (default reports/bench/gpu.json).
#
#   bash bench/gpu_check.sh                      # ~5-7 min on one H100 (each model capped at 150 s of training)
#   ROWS=20000 BUDGET=60 bash bench/gpu_check.sh /tmp/gpu.json    # quicker
#   STEPS=200 bash bench/gpu_check.sh            # cap train steps per model instead of time
# Environment knobs: ROWS (85000), IMAGE_SIZE (224), JOBS (CPU processes generating images, default
# nproc), WORKERS (DataLoader workers, default min(nproc, 12)), STEPS (0 = one epoch), BUDGET (train
# seconds per model, 150), SMOKE_ROWS (2000; 0 skips the library check).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-reports/bench/gpu.json}"
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible to torch')"
NPROC="$(nproc)"
WORKERS_DEFAULT=$(( NPROC < 12 ? NPROC : 12 ))
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python bench/deep.py --gpu \
  --rows "${ROWS:-85000}" --image-size "${IMAGE_SIZE:-224}" --jobs "${JOBS:-$NPROC}" \
  --workers "${WORKERS:-$WORKERS_DEFAULT}" --steps "${STEPS:-0}" --budget "${BUDGET:-150}" \
  --smoke-rows "${SMOKE_ROWS:-2000}" --out "$OUT"
echo "gpu_check: wrote $OUT"

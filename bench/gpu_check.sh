#!/usr/bin/env bash
# GPU efficiency of every backbone family on one CUDA GPU (bench/deep.py --gpu): text encoders at real
# size (camembert-base, camembert-large, XLM-R base, FlauBERT base, CamemBERTa-v2 base) and image
# backbones at 224 px (resnet50, convnext_tiny/base, efficientnet_b0, vit_base, swin_tiny, a SigLIP
# tower); pretrained weights when on disk, random init otherwise. Per family: training and inference
# samples/s, peak GPU memory, MFU (FLOPs counted by torch's flop counter / dense bf16 peak of the device).
# Texts: the generated catalog's token-length distribution (cap 256), dynamic vs fixed-256 padding.
# Images: GPU-fed (uint8 cache + GPU augmentation) vs the library's DataLoader path (JPEG decoding in
# WORKERS processes). Then the library's own full-profile paths and a 2,000-row train/predict check.
# Targets (PASS/FAIL in the table and the JSON): base text encoder >= 1,500 train samples/s,
# ResNet50 224 px >= 3,000 train images/s. Writes JSON to $1 (default reports/bench/gpu.json) after
# every model, so a run cut short keeps what it measured.
#
#   bash bench/gpu_check.sh                        # ~6-8 min on one H100/H200
#   BUDGET=8 bash bench/gpu_check.sh /tmp/gpu.json # quicker
#   COMPILE=1 bash bench/gpu_check.sh              # + torch.compile (compile time is outside the timing)
#   ONLY=camembert-base,resnet50 bash bench/gpu_check.sh
# Environment knobs: BUDGET (timed seconds per model, 12), DEADLINE (seconds of family benchmarks
# after which the remaining families are skipped, 420; 0 = none), ROWS (generated rows with JPEGs,
# 12000), IMAGE_SIZE (generated JPEG side, 500 = the real catalog's), TEXT_ROWS (rows whose texts are
# tokenised, 84916), JOBS (processes generating the catalog, nproc), WORKERS (DataLoader workers,
# min(nproc, 12)), STEPS (max timed steps per phase, 0 = budget only), TEXT_BATCH / IMAGE_BATCH
# (0 = 128 text, 64 for the large encoder, 256 images), LOADER_MODELS (families also timed through the
# DataLoader path, resnet50), ONLY (family keys), COMPILE (1 = torch.compile), SMOKE_ROWS (2000; 0
# skips the library train check), LIBRARY (0 skips the library paths).
# Multi-GPU step (bench/distributed.py): when `nvidia-smi -L` lists N > 1 GPUs, camembert-base and
# resnet50 train under torchrun on 1 GPU and on all N (DDP, NCCL, SyncBatchNorm for ResNet; per-GPU batch
# fixed: 16 texts, 64 images), and the scaling efficiency = samples/s(N) / (N x samples/s(1)) goes into the
# JSON under `multi_gpu`; with one GPU it records `"skipped": "1 GPU"`. MULTI_GPU=0 skips the step,
# MULTI_STEPS (30) sets its timed steps, SCALING=strong keeps the global batch instead (the stages' semantics).
# The code paths are tested without a GPU by `python bench/deep.py --cpu-smoke` (tests/bench/test_backbones.py);
# the multi-process one by `python bench/distributed.py` (2 gloo processes on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-reports/bench/gpu.json}"
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible to torch')"
NPROC="$(nproc)"
WORKERS_DEFAULT=$(( NPROC < 12 ? NPROC : 12 ))
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=true
export COMPILE="${COMPILE:-0}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
EXTRA=()
if [ "${LIBRARY:-1}" = "0" ]; then EXTRA+=(--no-library); fi
python bench/deep.py --gpu \
  --rows "${ROWS:-12000}" --image-size "${IMAGE_SIZE:-500}" --text-rows "${TEXT_ROWS:-84916}" \
  --jobs "${JOBS:-$NPROC}" --workers "${WORKERS:-$WORKERS_DEFAULT}" --steps "${STEPS:-0}" \
  --budget "${BUDGET:-12}" --deadline "${DEADLINE:-420}" --text-batch "${TEXT_BATCH:-0}" \
  --image-batch "${IMAGE_BATCH:-0}" --loader-models "${LOADER_MODELS:-resnet50}" --only "${ONLY:-}" \
  --smoke-rows "${SMOKE_ROWS:-2000}" --out "$OUT" "${EXTRA[@]}"
if [ "${MULTI_GPU:-1}" != "0" ]; then
  NGPU="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  python bench/distributed.py --device cuda --processes "${NGPU:-0}" --steps "${MULTI_STEPS:-30}" \
    --scaling "${SCALING:-weak}" --merge-into "$OUT"
fi
echo "gpu_check: wrote $OUT"

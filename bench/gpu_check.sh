#!/usr/bin/env bash
# The deep models' library code on one CUDA GPU (bench/deep.py --gpu): the full profiles (camembert-base,
# ResNet50 at 224 px; pretrained weights when on disk, random init otherwise) on a generated catalog of
# ROWS rows with IMAGE_SIZE px JPEGs, decoded by WORKERS DataLoader processes. Per model: training and
# inference samples/s, peak GPU memory; then the library's own train + predict on SMOKE_ROWS rows. The two
# throughput targets are checked from the JSON at the end (PASS/FAIL): camembert-base >= 1,500 train
# samples/s, ResNet50 224 px >= 3,000 train images/s. Writes JSON to $1 (default reports/bench/gpu.json).
#
#   bash bench/gpu_check.sh                        # a few minutes on one H100/H200
#   BUDGET=8 bash bench/gpu_check.sh /tmp/gpu.json # quicker
# Environment knobs: BUDGET (timed seconds per model, 110), ROWS (12000), IMAGE_SIZE (500), JOBS
# (processes generating the catalog, nproc), WORKERS (DataLoader workers, min(nproc, 12)), STEPS (max timed
# steps per model, 0 = budget only), SMOKE_ROWS (2000; 0 skips the library train check).
# The same code runs without a GPU in `python bench/deep.py --cpu-smoke` (tests/bench/test_backbones.py).
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
  --rows "${ROWS:-12000}" --image-size "${IMAGE_SIZE:-500}" --jobs "${JOBS:-$NPROC}" \
  --workers "${WORKERS:-$WORKERS_DEFAULT}" --steps "${STEPS:-0}" --budget "${BUDGET:-110}" \
  --smoke-rows "${SMOKE_ROWS:-2000}" --out "$OUT"
python - "$OUT" <<'PY'
import json, sys
targets = {"camembert": 1500, "resnet50": 3000}
for row in json.load(open(sys.argv[1]))["results"]:
    goal = targets.get(row["model"])
    rate = row.get("train_samples_per_s")
    if goal is not None:
        verdict = "PASS" if rate is not None and rate >= goal else "FAIL"
        print(f"gpu_check: {row['model']} ({row.get('config')}): {rate} train samples/s, target {goal}: {verdict}")
PY
echo "gpu_check: wrote $OUT"

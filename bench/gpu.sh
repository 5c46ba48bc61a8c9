#!/usr/bin/env bash
# GPU checks in one prepared command (under 8 minutes on an H100/H200): see bench/gpu.py for what it measures.
# Needs torch and transformers only (a lent GPU image has both); writes bench/results/gpu-<date>.json.
#   bash bench/gpu.sh            # on the GPU machine
#   bash bench/gpu.sh --dry_run  # on CPU: the same code on toy shapes (CI-safe check of the script)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi (CPU dry run)"
timeout 480 python bench/gpu.py "$@"

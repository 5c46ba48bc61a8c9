#!/usr/bin/env bash
# Regenerate both locks from pyproject.toml's ranges, each in a fresh venv, then freeze every installed version:
#   constraints.txt       the newest end: current transformers 5.x and torch (PyPI's torch, a CUDA build that runs on CPU)
#   constraints-onnx.txt  the oldest end with the ONNX extra: optimum-onnx 0.1.0 caps transformers < 4.58; torch 2.13.0
#                         (the local CPU wheel)
# Review the diffs, run .ci/run (it tests both), commit.
set -euo pipefail
cd "$(dirname "$0")/.."
lock() {  # lock FILE PIP-ARGS...
  local file="$1"
  shift
  local venv
  venv="$(mktemp -d)/venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$@"
  {
    sed -n '/^#/p' "$file"
    "$venv/bin/pip" freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' | sort -f
  } > "$file.new"
  mv "$file.new" "$file"
  echo "$file regenerated ($(grep -vc '^#' "$file") packages)"
}
lock constraints.txt -e ".[dev]" "torch>=2.15" "transformers>=5"
lock constraints-onnx.txt -e ".[dev,onnx]" "torch==2.13.0" "transformers<4.58"
echo "now run: bash .ci/run"

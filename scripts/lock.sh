#!/usr/bin/env bash
# Regenerate constraints.txt: resolve pyproject.toml's ranges in a fresh venv (torch pinned to 2.13.0),
# then freeze every installed version. Review the diff, run the tests, commit.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[dev]" "torch==2.13.0"
{
  sed -n '/^#/p' constraints.txt
  "$venv/bin/pip" freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt regenerated ($(grep -vc '^#' constraints.txt) packages); now run the tests"

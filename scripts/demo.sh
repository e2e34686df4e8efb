#!/usr/bin/env bash
# Set up, then run the whole demo pipeline on the bundled demo storefront. Extra arguments go to `querylife demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/querylife demo --out runs/demo "$@"

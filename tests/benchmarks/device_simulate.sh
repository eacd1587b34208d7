#!/usr/bin/env bash
# The real-data simulation on one GPU machine (device tool), the product on its embedded defaults:
#   bash tests/benchmarks/device_simulate.sh   (pure-Python wheels in $WHEELS, the shared data gzipped in .gpu/)
# SQLite, the filesystem broker and a real worker process on the GPU host; the `small` base pretrained
# on the pool's texts; recipe: the small-base settings measured best (docs/learning-loop.md).
set -uo pipefail
gunzip -kf .gpu/amazon_items.jsonl.gz
python3 -m pip install -q --no-index --no-deps --target .site ${WHEELS:-.whl}/*.whl >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false DEBUG=1
python3 -c "import django, rest_framework, celery, trl, datasets, psycopg; import webapp.settings" || exit 1
export RETRAIN_RECIPE=small-qlora
export RETRAIN_RECIPE_OVERRIDES='{"quant": {"mode": "none"}, "train": {"learning_rate": 1e-3, "epochs": 3}, "predict": {"estimate": "median"}}'
out=${OUT:-var/gpu-sim-out}; mkdir -p "$out"
timeout "${SIM_SECONDS:-560}" python3 tests/benchmarks/simulate_loop.py --items .gpu/amazon_items.jsonl \
  --rounds "${ROUNDS:-4}" --labels-per-round "${LABELS:-800}" --seed-size "${SEED_SIZE:-500}" --seed 1 \
  --start --build-base small --out var/gpu-sim 2>&1 | grep -v -i warn | tail -40
for f in simulation.json simulation.md error-per-round.png simulation.log; do cp "var/gpu-sim/$f" "$out/" 2>/dev/null; done
tail -c 4000 var/gpu-sim/priceloop/logs/worker.log > "$out/worker-tail.log" 2>/dev/null

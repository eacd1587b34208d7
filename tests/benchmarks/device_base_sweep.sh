#!/usr/bin/env bash
# What limits the real-data loop: the `small` base or the fine-tune? One GPU machine (device tool), ~9 minutes:
#   bash tests/benchmarks/device_base_sweep.sh   (wheels in .whl/, the shared data gzipped in .gpu/, $OUT)
# Each arm builds its own text-only base from the real pool's texts (a variant of `small`: pretraining steps,
# width, depth) and fine-tunes the `small` recipe on SEED_ITEMS correct labels (default 3,600: about what the
# four-round simulation has after round 4), scoring validation and test MAE after every epoch beside the
# TF-IDF ridge on the same labels (tests/benchmarks/offline_recipe_search.py). ARMS picks arms by name
# (default: steps1000 steps3000); the chosen arms run side by side on one GPU.
# Measured 2026-12-06 (one H200): all five arms at once took 272 s to pretrain a 1,000-step base (a 3,000-step
# base alone takes 184-207 s) and no 3,000-step arm finished its base within 540 s: these models are too
# small to fill the GPU, so the processes compete for the host. Hence at most two arms per call, each with a
# few CPU threads (OMP_NUM_THREADS, not measured on its own).
set -uo pipefail
gunzip -kf .gpu/amazon_items.jsonl.gz
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
ARMS=${ARMS:-steps1000 steps3000}
out=${OUT:-var/base-sweep}; mkdir -p "$out" var/base-sweep
S=tests/benchmarks/offline_recipe_search.py
SMALL='{"quant": {"mode": "none"}, "predict": {"estimate": "median"}, "train": {"price_sigma": 0.3}}'
common=(--items .gpu/amazon_items.jsonl --test-share 0.25 --seed-items "${SEED_ITEMS:-3600}" --val-items 300
        --epochs "${EPOCHS:-8}" --recipe small-qlora --variants all-r32 --overrides "$SMALL" --size small)
arm() { local name=$1; shift; [[ " $ARMS " == *" $name "* ]] || return 0; (timeout "${ARM_TIMEOUT:-540}" python3 $S "${common[@]}" "$@" --out "var/base-sweep/$name" 2>&1 \
  | grep -E '^\{|BEST|^items|^base|^baselines|Error|error' > "$out/$name.log") & }
arm steps3000 --lr 1e-3
arm steps3000-lr2e-3 --lr 2e-3
arm steps1000 --lr 1e-3 --base-steps 1000
arm wide768 --lr 1e-3 --hidden 768
arm deep12 --lr 1e-3 --layers 12
wait
for f in "$out"/*.log; do echo "== $f"; grep -E 'BEST|^base|^baselines' "$f" | cut -c1-400; done
nvidia-smi --query-gpu=name --format=csv,noheader

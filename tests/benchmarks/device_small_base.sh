#!/usr/bin/env bash
# Can a text-only `small` base learn prices from labels? One GPU machine (device tool), ~9 minutes:
#   bash tests/benchmarks/device_small_base.sh   (wheels in $WHEELS, the shared data gzipped in .gpu/, $OUT)
# Builds one small base from the real pool's texts, then fine-tunes recipe variants on the same seed set
# in parallel (per-epoch validation/test MAE, the TF-IDF ridge on the same labels), and checks the demo's
# tiny configuration on the synthetic catalogue beside them.
set -uo pipefail
gunzip -kf .gpu/amazon_items.jsonl.gz
python3 -m pip install -q --no-index --no-deps --target .site ${WHEELS:-.whl}/*.whl >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-var/small}; mkdir -p "$out" var/small
S=tests/benchmarks/offline_recipe_search.py
real=(--items .gpu/amazon_items.jsonl --test-share 0.25 --seed-items 1500 --val-items 300 --epochs 4 --recipe small-qlora)
(timeout 560 python3 $S --synthetic 800 --seed-items 400 --val-items 60 --epochs 8 --variants all-r16 --lr 3e-3,1e-2 \
  --out var/small/tiny 2>&1 | grep -E '^\{|BEST|^items|^base|^baselines|Error' > "$out/tiny-demo.log") &
# Build the base once (the variants reuse it): pretraining alone takes the GPU.
timeout 300 python3 $S "${real[@]}" --size small --variants all-r32 --lr 1e-3 --epochs 0 --out var/small/base \
  2>&1 | grep -E '^items|^base|^baselines|Error' > "$out/base.log"
base=$(ls -d var/small/base/base-small 2>/dev/null)
run() { local name=$1; shift; (timeout 420 python3 $S "${real[@]}" --base "$base" "$@" --out "var/small/$name" 2>&1 \
  | grep -E '^\{|BEST|^items|^baselines|Error' > "$out/$name.log") & }
run qlora-attn --variants attn-r8 --lr 2e-4
run qlora-all-2e-4 --variants all-r32 --lr 2e-4
run bf16-all-1e-3 --variants all-r32 --lr 1e-3 --overrides '{"quant": {"mode": "none"}, "predict": {"estimate": "median"}}'
run bf16-all-3e-4 --variants all-r32 --lr 3e-4 --overrides '{"quant": {"mode": "none"}, "predict": {"estimate": "median"}}'
wait
tail -n 4 "$out"/*.log

#!/usr/bin/env bash
# The offline-base recipe sweep of docs/learning-loop.md, on one GPU machine (device tool):
#   bash tests/benchmarks/device_recipe_sweep.sh   (expects wheels in .whl, the shared data in .gpu/, $OUT)
# Runs the synthetic (demo) configurations in parallel with the real-data ones; each writes a log.
set -uo pipefail
gunzip -kf .gpu/amazon_items.jsonl.gz; python3 -m pip install -q --no-index --no-deps --target .site ${WHEELS:-.whl}/*.whl >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-var/sweep}; mkdir -p "$out"
S="tests/benchmarks/offline_recipe_search.py"
syn=(--synthetic 600 --catalogue-seed 7 --seed-items 240 --val-items 60 --epochs 10)
run() { local name=$1; shift; (timeout 540 python3 "$S" "$@" --out "var/sweep/$name" 2>&1 | grep -E '^\{|BEST|^items|^base|Error|error' > "$out/$name.log") & }
run A-tiny60 "${syn[@]}" --size tiny --variants all-r16 --lr 1e-2
run B-tiny600 "${syn[@]}" --size tiny --base-steps 600 --variants all-r16 --lr 1e-2
run C-h128x4-600 "${syn[@]}" --size tiny --hidden 128 --layers 4 --base-steps 600 --variants all-r16 --lr 1e-2
run D-h128x4-600-nonum "${syn[@]}" --size tiny --hidden 128 --layers 4 --base-steps 600 --no-number-init --variants all-r16 --lr 1e-2
run E-h128x4-600-lr3e-3 "${syn[@]}" --size tiny --hidden 128 --layers 4 --base-steps 600 --variants all-r16 --lr 3e-3
run F-h128x4-600-attn "${syn[@]}" --size tiny --hidden 128 --layers 4 --base-steps 600 --variants attn-r8 --lr 1e-2
real=(--items .gpu/amazon_items.jsonl --test-share 0.25 --seed-items 1000 --val-items 300 --epochs 4 --recipe small-qlora)
run G-small-4bit "${real[@]}" --size small --variants all-r32 --lr 2e-4,1e-3
run H-small-bf16 "${real[@]}" --size small --variants all-r32 --lr 1e-3 --overrides '{"quant": {"mode": "none"}}'
run I-small-nonum "${real[@]}" --size small --no-number-init --variants all-r32 --lr 1e-3 --overrides '{"quant": {"mode": "none"}}'
wait
tail -n 3 "$out"/*.log

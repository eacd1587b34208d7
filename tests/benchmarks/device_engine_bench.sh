#!/usr/bin/env bash
# One bench_engine_gpu.py run on a device machine (docs/benchmarks.md §6), then the Triton/Inductor compile
# failures it logged, counted per training variant (the lines that end each variant's run mark the spans).
# Usage (device tool, from the repository root; the wheels and the gzipped data carried in .whl/ and .gpu/):
#   bash tests/benchmarks/device_engine_bench.sh [extra bench_engine_gpu.py options]
set -uo pipefail
out=${OUT:-var/device-engine}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl
export PYTHONPATH=$PWD/.site
[ -f .gpu/amazon_items.jsonl ] || gunzip -c .gpu/amazon_items.jsonl.gz > .gpu/amazon_items.jsonl
nvidia-smi --query-gpu=name --format=csv,noheader
timeout "${BENCH_TIMEOUT:-540}" python3 tests/benchmarks/bench_engine_gpu.py --items .gpu/amazon_items.jsonl \
    --out "$out/engine.json" --steps 40 --warmup 5 --n-predict 1024 --predict-batches recipe "$@" \
    > "$out/engine.log" 2>&1
echo "bench rc=$?"
awk '/AttributeError\(.\x27float\x27 object has no attribute \x27to\x27.\)/ {n++}
     /^(reference|fast[a-z_]*|profile [a-z_]+) [{]/ {print "compile failures before the end of", $1, ($1 == "profile" ? $2 : ""), n + 0; n = 0}' \
    "$out/engine.log" | tee "$out/compile-failures.txt"
grep -v "examples/s\|Loading weights" "$out/engine.log" | grep -A40 "^training " | head -40

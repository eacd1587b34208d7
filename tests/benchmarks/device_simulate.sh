#!/usr/bin/env bash
# The real-data simulation on one GPU machine (device tool), the product on its embedded defaults:
#   bash tests/benchmarks/device_simulate.sh      (results in $OUT/loop-arms.tar.gz; progress on stdout)
# SQLite, the filesystem broker and a real worker process on the GPU host; the `small` base pretrained on
# the pool's texts; the retraining settings measured best (docs/learning-loop.md): every candidate a fresh
# adapter on all labels so far (RETRAIN_FROM=base), soft price targets, 6 epochs. Needs the pure-Python
# wheels in .whl/ and the shared data gzipped as .gpu/amazon_items.jsonl.gz (see device_loop_arms.sh).
# ITEMS=FILE takes another catalogue; ROUNDS, LABELS, SEED_SIZE and GOLD_SIZE the simulation's sizes.
set -uo pipefail
here=$(dirname "$0")
ARMS=${ARMS:-base-soft-6ep} bash "$here/device_loop_arms.sh" start
bash "$here/device_loop_arms.sh" collect

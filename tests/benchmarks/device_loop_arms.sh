#!/usr/bin/env bash
# The real-data simulation on one H200 (device tool), several retraining settings side by side on one
# `small` base built from the pool's texts. Each arm is its own PriceLoop on the embedded defaults (SQLite,
# the filesystem broker, a real worker process), driven by tests/benchmarks/simulate_loop.py.
#
#   bash tests/benchmarks/device_loop_arms.sh start     # in the background (setsid): base, then the arms
#   bash tests/benchmarks/device_loop_arms.sh wait 560  # up to N seconds for the arms to end; prints progress
#   bash tests/benchmarks/device_loop_arms.sh collect   # results into $OUT/loop-arms.tar.gz
#
# Needs the pure-Python wheels in .whl/ and ../shared/data/amazon_items.jsonl gzipped as
# .gpu/amazon_items.jsonl.gz (both git-ignored, carried). ARMS picks arms by name (default: all);
# ANNOTATORS, ROUNDS, LABELS, SEED_SIZE and GOLD_SIZE set the simulation's options (ANNOTATORS=careful=4
# ROUNDS=1 LABELS=4200: every pool item labelled correctly in one round, the ceiling of this base and recipe).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false DEBUG=1
export RETRAIN_RECIPE=${RETRAIN_RECIPE:-small-qlora}
work=${WORK:-var/loop} PY=${PY:-python3} ITEMS=${ITEMS:-.gpu/amazon_items.jsonl} SIZE=${BASE_SIZE:-small}
ROUNDS=${ROUNDS:-4} LABELS=${LABELS:-800} SEED_SIZE=${SEED_SIZE:-200} GOLD_SIZE=${GOLD_SIZE:-40}
ANNOTATORS=${ANNOTATORS:-careful=3,sloppy=1,spammer=1}

# name | environment | recipe overrides (over small-qlora; bf16 LoRA r32 on all projections, 1e-3, median:
# the offline search's best, docs/learning-loop.md)
arms() {
  local common='"quant": {"mode": "none"}, "predict": {"estimate": "median"}'
  echo "base-soft|RETRAIN_FROM=base|{$common, \"train\": {\"learning_rate\": 1e-3, \"epochs\": 3, \"price_sigma\": 0.3}}"
  echo "base-plain|RETRAIN_FROM=base|{$common, \"train\": {\"learning_rate\": 1e-3, \"epochs\": 3, \"price_sigma\": 0.0}}"
  echo "champion-replay|RETRAIN_FROM=champion RETRAIN_REPLAY_SHARE=0.8|{$common, \"train\": {\"learning_rate\": 1e-3, \"epochs\": 3, \"price_sigma\": 0.3}}"
  echo "base-soft-6ep|RETRAIN_FROM=base|{$common, \"train\": {\"learning_rate\": 1e-3, \"epochs\": 6, \"price_sigma\": 0.3}}"
}

start() {
  mkdir -p $work
  [[ -e .gpu/amazon_items.jsonl.gz ]] && gunzip -kf .gpu/amazon_items.jsonl.gz
  [[ -d .whl && -z "${NO_WHEELS:-}" ]] && $PY -m pip install -q --no-index --no-deps --target .site .whl/*.whl > $work/pip.log 2>&1
  $PY -c "import django, rest_framework, celery, trl, datasets, peft, transformers; import webapp.settings;
print('transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)" || exit 1
  local t0=$SECONDS
  $PY tests/benchmarks/simulate_loop.py --items "$ITEMS" --seed 1 --seed-size "$SEED_SIZE" --gold-size "$GOLD_SIZE" \
    --rounds "$ROUNDS" --labels-per-round "$LABELS" --start --build-base "$SIZE" --base-only --out $work/base > $work/base.log 2>&1 || { echo "base failed"; exit 1; }
  echo "base built in $((SECONDS - t0)) s" >> $work/base.log
  export BASE_MODEL=$PWD/$work/base/base-$SIZE
  while IFS='|' read -r name envs overrides; do
    [[ -n "${ARMS:-}" && " $ARMS " != *" $name "* ]] && continue
    mkdir -p $work/$name
    # shellcheck disable=SC2086
    env $envs RETRAIN_RECIPE_OVERRIDES="$overrides" $PY tests/benchmarks/simulate_loop.py --items "$ITEMS" \
      --rounds "$ROUNDS" --labels-per-round "$LABELS" --seed-size "$SEED_SIZE" --gold-size "$GOLD_SIZE" \
      --annotators "$ANNOTATORS" --seed 1 --start \
      --out $work/$name > $work/$name/stdout.log 2>&1 &
  done < <(arms)
  wait
  echo done > $work/ALL-DONE
}

progress() {
  tail -n 2 $work/base.log 2>/dev/null
  for f in $work/*/simulation.log; do echo "== $f"; grep -v -i warn "$f" | tail -n 3; done
}

case "${1:-}" in
  start) start ;;
  wait)
    end=$((SECONDS + ${2:-560}))
    while [[ ! -e $work/ALL-DONE && $SECONDS -lt $end ]]; do sleep 10; done
    progress ;;
  collect)
    progress
    tar czf "$work/.collect.$$.tgz" --exclude='priceloop' --exclude='*.safetensors' \
      $work/*.log $work/*/simulation.* $work/*/error-per-round.png $work/*/stdout.log 2>/dev/null
    mv "$work/.collect.$$.tgz" "${OUT:-.}/loop-arms.tar.gz"  # whole or not at all, also when run every minute
    for f in $work/*/priceloop/logs/worker.log; do tail -c 3000 "$f"; done > "${OUT:-.}/worker-tails.log" 2>/dev/null
    ;;
  *) echo "usage: $0 start|wait [SECONDS]|collect" >&2; exit 2 ;;
esac

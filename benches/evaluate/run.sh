#!/usr/bin/env bash
# Times `evaluate` against training on the demo model (Gemma-3 270M, fetched by
# scripts/demo-model.sh), in one run, whole processes:
#   1. one steered (setup, multiplier) pass over N contrast pairs against a training forward
#      over the same pairs (both sides of each, every layer);
#   2. the default `evaluate --contrast-type tom --num-samples N` against training those pairs.
# Usage: benches/evaluate/run.sh [N]   (default 50)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-50}
cargo build --release --locked >&2
bin=target/release/train-vector
model=$(scripts/demo-model.sh)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

now() { date +%s.%N; }
t0=$(now)
"$bin" --contrast-type tom --num-samples "$n" --model "$model" --output-dir "$out" --no-progress \
    >"$out/paths" 2>"$out/train.log"
t1=$(now)
vector=$(grep '\.safetensors$' "$out/paths")
"$bin" evaluate --contrast-type tom --num-samples "$n" --model "$model" --vector "$vector" \
    --no-progress >"$out/eval.txt" 2>"$out/eval.log"
t2=$(now)

# "Training complete! (T tokens in B batches, Xs)" and the evaluation's own pass timings.
train_fwd=$(sed -n 's/.*in [0-9]* batches, \([0-9.]*\)s).*/\1/p' "$out/train.log")
per_pass=$(sed -n 's/.*steered passes [0-9.]*s (\([0-9.]*\)s each).*/\1/p' "$out/eval.log")
awk -v n="$n" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v tf="$train_fwd" -v pp="$per_pass" 'BEGIN {
    tw = t1 - t0; ew = t2 - t1
    printf "pairs: %d\n", n
    printf "training, whole process:            %7.2f s (forward %.2f s)\n", tw, tf
    printf "evaluate (default), whole process:  %7.2f s  = %.1fx training (target <= 12x)\n", ew, ew / tw
    printf "one steered pass:                   %7.2f s  = %.2fx the training forward (target <= 1.5x)\n", pp, pp / tf
}'
grep 'candidate tokens' "$out/eval.log" >&2

#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 600), from this directory's seed
# corpora, and stops at the first crash, panic, hang or oversized allocation.
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo +nightly install cargo-fuzz --locked
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pairs_json layers vector_safetensors vector_pkl vector_gguf)
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s" >&2
    cargo +nightly fuzz run -O "$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|==|SUMMARY|Done)|panicked|ERROR" >&2
done

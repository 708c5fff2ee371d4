#!/usr/bin/env bash
# Throughput of `train-vector serve` on the demo model: one client, then 8 concurrent clients,
# unsteered and steered (every request with a vector at multiplier 0.5), all on loopback.
# Usage: benches/serve/run.sh [REQUESTS_PER_CLIENT] [MAX_TOKENS]   (default 4 and 64)
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-4}
tokens=${2:-64}
cargo build --release --locked >&2
bin=target/release/train-vector
model=$(scripts/demo-model.sh)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
"$bin" --contrast-type tom --num-samples 20 --layers 6,9,12 --model "$model" --output-dir "$work/v" \
    --no-progress >/dev/null 2>&1
"$bin" serve --model "$model" --vectors "$work/v" --port 0 >"$work/url" 2>"$work/log" &
server=$!
while [ ! -s "$work/url" ]; do sleep 0.2; done
url=$(head -n1 "$work/url")
vector=$(basename "$(ls "$work"/v/*.safetensors)" .safetensors)
load() { python3 benches/serve/load.py "$url" "$@" | tee -a "$work/results"; }
load 1 "$requests" "$tokens"
load 1 "$requests" "$tokens" "$vector" 0.5
# Eight clients, steered and unsteered in turn, three rounds (the machine's noise is several %).
for round in 1 2 3; do
  load 8 "$requests" "$tokens"
  load 8 "$requests" "$tokens" "$vector" 0.5
done
python3 - "$work/results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def rate(clients, steered):
    r = [x["tokens_per_s"] for x in rows if x["clients"] == clients and x["steered"] == steered]
    return sum(r) / len(r)
one, plain, steered = rate(1, False), rate(8, False), rate(8, True)
print(f"8 clients: steered {steered:.1f} tokens/s = {100 * steered / plain:.0f}% of unsteered "
      f"{plain:.1f} (target >= 90%); {plain / one:.1f}x one client's {one:.1f}")
print("failed requests:", sum(x["failed"] for x in rows))
PY

#!/usr/bin/env bash
# Weight streaming on a model larger than its budget: a random Gemma-2 of the gemma-2-2b shape
# (26 blocks, bf16 on disk, about 5.2 GB; made by benches/compare/make_model.py), trained on
# ToM pairs in memory, with `--max-memory` far below the weights' size, and streamed although
# it fits (`--stream-weights`), whole processes: wall time and peak RSS of each, and how close
# the streamed vectors are to the in-memory one.
#
#   benches/stream/run.sh [--pairs 20] [--max-memory 1.5GB]
#
# Python (for the model) comes from $BENCH_VENV as in benches/compare/run.sh. Not part of CI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PAIRS=20; BUDGET=1.5GB
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift 2;;
    --max-memory) BUDGET=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
VENV=${BENCH_VENV:-$HOME/.cache/train-vector-bench/venv}
WORK=${BENCH_WORK:-$HOME/.cache/train-vector-bench}
MODEL="$WORK/gemma-2-2b-26L-bf16"
(cd "$ROOT" && cargo build --release --locked -q)
BIN="$ROOT/target/release/train-vector"
[ -f "$MODEL/config.json" ] || "$VENV/bin/python" "$ROOT/benches/compare/make_model.py" "$MODEL" \
  --shape gemma-2-2b --layers 26 --dtype bfloat16 >&2
echo "model: $(du -sh "$MODEL" | cut -f1) on disk" >&2
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { # name, extra flags...
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$OUT/$name.time" "$BIN" --contrast-type tom --model "$MODEL" \
    --num-samples "$PAIRS" --layers=-1,-2,-3,5,10 --output-dir "$OUT/$name" --no-progress \
    --device cpu --max-batch-tokens 1024 "$@" >/dev/null 2>"$OUT/$name.log"
  read -r wall rss < "$OUT/$name.time"
  printf '%-10s wall %7.1f s  peak RSS %7.0f MB\n' "$name" "$wall" "$((rss / 1024))"
}
run in-memory --max-memory 64GB --stream-weights=false
run streamed --max-memory "$BUDGET"
run stream-all --max-memory 64GB
grep -h "read one at a time" "$OUT/streamed.log" >&2 || { echo "the budget did not make it stream" >&2; exit 1; }
"$VENV/bin/python" - "$OUT" <<'PY'
import glob, sys
from safetensors.numpy import load_file
out = sys.argv[1]
a = load_file(glob.glob(f"{out}/in-memory/*.safetensors")[0])
import numpy as np
for run in ("streamed", "stream-all"):
    b = load_file(glob.glob(f"{out}/{run}/*.safetensors")[0])
    for k in sorted(a, key=lambda s: int(s.split("_")[1])):
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
        rel = np.linalg.norm(x - y) / np.linalg.norm(x)
        print(f"{run} {k}: cosine {cos:.9f}, relative L2 {rel:.2e}")
PY

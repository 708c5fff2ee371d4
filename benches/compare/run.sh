#!/usr/bin/env bash
# Side-by-side CPU benchmark: the Python stack (transformers + steering-vectors 0.12.2) and
# train-vector on the same random-weight Gemma-2, the same ToM pairs and the same threads.
#
#   benches/compare/run.sh [--shape gemma-2-2b] [--layers-in-model 8] [--pairs 40] [--threads 2]
#
# Python dependencies go into a virtualenv outside the repository ($BENCH_VENV, default
# ~/.cache/train-vector-bench/venv). Not part of CI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHAPE=gemma-2-2b; MODEL_LAYERS=8; PAIRS=40; THREADS=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE=$2; shift 2;;
    --layers-in-model) MODEL_LAYERS=$2; shift 2;;
    --pairs) PAIRS=$2; shift 2;;
    --threads) THREADS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
VENV=${BENCH_VENV:-$HOME/.cache/train-vector-bench/venv}
WORK=${BENCH_WORK:-$HOME/.cache/train-vector-bench}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch "transformers==4.57.*" "steering-vectors==0.12.2" safetensors
fi
(cd "$ROOT" && cargo build --release --locked -q)
BIN="$ROOT/target/release/train-vector"
MODEL="$WORK/${SHAPE}-${MODEL_LAYERS}L"
[ -f "$MODEL/config.json" ] || "$VENV/bin/python" "$ROOT/benches/compare/make_model.py" "$MODEL" \
  --shape "$SHAPE" --layers "$MODEL_LAYERS" >&2
DATA="$ROOT/data/contrast_pairs/theory_of_mind.json"
MID=$((MODEL_LAYERS / 2))
SUBSET="$((MID - 1)),$MID,$((MID + 1))"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS

measure() { # prints "wall_s peak_rss_kb" for the command, its stdout to $OUT_JSON
  local t; t=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$t" "$@" > "$OUT_JSON"
  cat "$t"; rm -f "$t"
}

printf '%-10s %-8s %9s %9s %12s %10s\n' layers stack wall_s train_s tokens_per_s peak_rss_mb
for LAYERS in all "$SUBSET"; do
  OUT_JSON=$(mktemp)
  read -r PW PR < <(measure "$VENV/bin/python" "$ROOT/benches/compare/reference.py" --model "$MODEL" \
    --pairs "$DATA" --num-samples "$PAIRS" --layers "$LAYERS" --threads "$THREADS")
  read -r PT PTOK < <("$VENV/bin/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["train_s"], d["tokens"])' "$OUT_JSON")
  OUTDIR=$(mktemp -d)
  read -r RW RR < <(measure "$BIN" --contrast-type tom --model "$MODEL" --num-samples "$PAIRS" \
    --layers="$LAYERS" --output-dir "$OUTDIR" --no-progress --device cpu 2>/dev/null)
  read -r RT RTOK < <("$VENV/bin/python" -c 'import json,glob,sys; d=json.load(open(glob.glob(sys.argv[1]+"/*.json")[0])); print(d["seconds"], d["tokens"])' "$OUTDIR")
  rm -rf "$OUTDIR" "$OUT_JSON"
  "$VENV/bin/python" - "$LAYERS" "$PW" "$PR" "$PT" "$PTOK" "$RW" "$RR" "$RT" "$RTOK" <<'PY'
import sys
layers, pw, pr, pt, ptok, rw, rr, rt, rtok = sys.argv[1:]
pw, pr, pt, ptok, rw, rr, rt, rtok = map(float, (pw, pr, pt, ptok, rw, rr, rt, rtok))
row = "%-10s %-8s %9.2f %9.2f %12.0f %10.0f"
print(row % (layers, "python", pw, pt, ptok / pt, pr / 1024))
print(row % (layers, "rust", rw, rt, rtok / rt, rr / 1024))
print("%-10s %-8s speed x%.2f (tokens/s), wall x%.2f, peak RSS x%.2f" % (
    layers, "ratio", (rtok / rt) / (ptok / pt), pw / rw, rr / pr))
PY
done

#!/usr/bin/env bash
# GPU benchmark for an H200-class machine with the CUDA 13 driver, torch and transformers
# installed and no network. Brings nothing but a compressed CUDA build of train-vector and the
# steering-vectors wheel (pure Python). Makes random bf16 weights on the GPU for Gemma-2 shapes,
# runs the Python stack and train-vector on the same ToM pairs, and prints wall time, tokens
# per second and achieved FLOP/s against the card's bf16 peak. Finishes within 10 minutes.
#
#   benches/gpu/run.sh [dist/train-vector.xz] [dist/steering_vectors-0.12.2-py3-none-any.whl]
#
# Build the binary on any machine:
#   eval "$(scripts/setup-cuda-toolchain.sh /opt/cuda13)"
#   cargo build --release --features cuda && mkdir -p dist
#   strip -o dist/train-vector target/release/train-vector && xz -f -6 dist/train-vector
#   pip download --no-deps -d dist steering-vectors==0.12.2
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN_XZ=${1:-$ROOT/dist/train-vector.xz}
WHEEL=${2:-$(ls "$ROOT"/dist/steering_vectors-*.whl 2>/dev/null | head -n 1)}
PAIRS=${PAIRS:-128}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}   # H100/H200 SXM dense bf16
WORK=${WORK:-/tmp/tv-gpu}
SHAPES=${SHAPES:-"gemma-2-9b:42 gemma-2-27b:16"}   # shape:blocks kept (27b trimmed to fit the time)
SUBSET_SHAPES=${SUBSET_SHAPES:-"gemma-2-9b"}       # shapes also run on a 3-layer middle subset
mkdir -p "$WORK"
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start ))s] $*"; }

say "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
PY

say "== binary"
xz -dc "$BIN_XZ" > "$WORK/train-vector" && chmod +x "$WORK/train-vector"
BIN=$WORK/train-vector
if ldd "$BIN" | grep -q "not found"; then
  # CUDA 13 runtime libraries: from a toolkit, or from torch's nvidia wheels
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
           $(python3 -c 'import nvidia, os; [print(os.path.join(p, s, "lib")) for p in nvidia.__path__ for s in os.listdir(p)]' 2>/dev/null); do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
  done
  export LD_LIBRARY_PATH
fi
ldd "$BIN" | grep -E "cuda|cublas|curand|not found"
"$BIN" --version

say "== steering-vectors"
PYLIB=$WORK/pylib
python3 -m pip install -q --no-deps --target "$PYLIB" "$WHEEL" 2>&1 | tail -n 2
export PYTHONPATH=$PYLIB${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import steering_vectors, importlib.metadata as m; print("steering-vectors", m.version("steering-vectors"))'

say "== parity on the GPU (fixture model vs the recorded reference)"
python3 - "$ROOT" "$BIN" "$WORK" <<'PY'
import json, subprocess, sys, glob, os
import torch
from safetensors.torch import load_file
root, binary, work = sys.argv[1:]
g = json.load(open(f"{root}/tests/fixtures/golden/golden.json"))
ref = load_file(f"{root}/tests/fixtures/golden/golden.safetensors")
data = f"{work}/pairs"; os.makedirs(data, exist_ok=True)
json.dump([{"literal": p, "ironic": n} for p, n in g["pairs"]], open(f"{data}/irony.json", "w"))
for dtype in ("f32", "bf16"):
    out = f"{work}/parity-{dtype}"
    subprocess.run([binary, "--contrast-type", "irony", "--model", f"{root}/tests/fixtures/tiny-gemma2",
                    "--data-dir", data, "--output-dir", out, "--device", "cuda", "--dtype", dtype,
                    "--no-progress", "--overwrite"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    got = load_file(glob.glob(f"{out}/*.safetensors")[0])
    for k in sorted(got):
        w = ref["vector_all.layer" + k.split("_")[1]]
        cos = torch.nn.functional.cosine_similarity(got[k], w, dim=0).item()
        rel = ((got[k] - w).norm() / w.norm()).item()
        print(f"  {dtype} {k}: cosine {cos:.7f} rel L2 {rel:.2e}")
PY

flops_per_token() { # 2 x matmul parameters per token for N blocks (+ LM head if asked)
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1] + "/config.json")); blocks = int(sys.argv[2]); head = sys.argv[3] == "1"
h, i, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
per_block = h * nh * d * 2 + 2 * h * nkv * d + 3 * h * i
print(2 * (per_block * blocks + (h * cfg["vocab_size"] if head else 0)))
PY
}

printf '\n%-16s %-7s %-9s %8s %8s %10s %9s %7s\n' shape stack layers load_s train_s tokens/s TFLOP/s %peak > "$WORK/table.txt"
for entry in $SHAPES; do
  shape=${entry%%:*}; blocks=${entry##*:}
  model=$WORK/$shape-${blocks}L
  say "== $shape with $blocks blocks: random bf16 weights"
  timeout 240 python3 "$ROOT/benches/compare/make_model.py" "$model" --shape "$shape" \
    --layers "$blocks" --dtype bfloat16 --device cuda || { say "model creation failed"; continue; }
  mid=$((blocks / 2)); subset="$((mid - 1)),$mid,$((mid + 1))"
  sets=all; case " $SUBSET_SHAPES " in *" $shape "*) sets="all $subset";; esac
  for layers in $sets; do
    say "python stack, layers $layers"
    py=$(timeout 200 python3 "$ROOT/benches/compare/reference.py" --model "$model" \
      --pairs "$ROOT/data/contrast_pairs/theory_of_mind.json" --num-samples "$PAIRS" \
      --layers "$layers" --device cuda --dtype bfloat16 | tail -n 1)
    echo "  $py"
    say "train-vector, layers $layers"
    out=$WORK/out-$shape; rm -rf "$out"
    /usr/bin/time -f "  wall %e s, peak RSS %M KB" timeout 200 "$BIN" --contrast-type tom \
      --model "$model" --num-samples "$PAIRS" --layers="$layers" --output-dir "$out" \
      --no-progress --device cuda 2>&1 | grep -E "Model loaded|Training complete!|Tokens processed|wall|error" 
    rs=$(cat "$out"/*.json 2>/dev/null)
    deepest=$([ "$layers" = all ] && echo "$blocks" || echo $((mid + 2)))
    fr=$(flops_per_token "$model" "$deepest" 0); fp=$(flops_per_token "$model" "$blocks" 1)
    python3 - "$shape" "$layers" "$py" "$rs" "$fr" "$fp" "$PEAK_TFLOPS" >> "$WORK/table.txt" <<'PY'
import json, sys
shape, layers, py, rs, fr, fp, peak = sys.argv[1:]
fr, fp, peak = float(fr), float(fp), float(peak)
row = "%-16s %-7s %-9s %8.1f %8.2f %10.0f %9.1f %6.1f%%"
try:
    p = json.loads(py)
    t = p["tokens"] / p["train_s"]
    print(row % (shape, "python", layers, p["load_s"], p["train_s"], t, t * fp / 1e12, 100 * t * fp / 1e12 / peak))
except Exception as e:
    print(f"{shape} python {layers}: no result ({e})")
try:
    r = json.loads(rs)
    t = r["tokens"] / r["seconds"]
    print(row % (shape, "rust", layers, float("nan"), r["seconds"], t, t * fr / 1e12, 100 * t * fr / 1e12 / peak))
    print("%-16s ratio   %-9s tokens/s x%.2f" % (shape, layers, t / (p["tokens"] / p["train_s"])))
except Exception as e:
    print(f"{shape} rust {layers}: no result ({e})")
PY
  done
  rm -rf "$model"
done
cat "$WORK/table.txt"
say "done"

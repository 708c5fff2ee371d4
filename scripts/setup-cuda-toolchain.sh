#!/usr/bin/env bash
# Installs a build-only CUDA 13.0 toolchain from PyPI wheels, enough for
# `cargo build --release --features cuda` on a machine with no GPU and no driver.
#
#   eval "$(scripts/setup-cuda-toolchain.sh /opt/cuda13)"
#   cargo build --release --features cuda
#
# Why 13.0: the target machines run driver 580 (CUDA 13.0), whose PTX JIT accepts ISA <= 9.0;
# newer nvcc emits PTX it refuses, and cudarc panics on nvcc > 13.4.
# Prints `export` lines on stdout; progress goes to stderr.
set -euo pipefail
PREFIX=${1:-/opt/cuda13}
cd "$(dirname "$0")/.."

if [ ! -x "$PREFIX/venv/bin/pip" ]; then
  python3 -m venv "$PREFIX/venv" >&2
fi
"$PREFIX/venv/bin/pip" install -q --progress-bar off \
  "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
  "nvidia-cuda-nvrtc==13.0.88" "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35" >&2

CUDA_ROOT=$(echo "$PREFIX"/venv/lib/python3*/site-packages/nvidia/cu13)
[ -x "$CUDA_ROOT/bin/nvcc" ] || { echo "nvcc not found under $CUDA_ROOT" >&2; exit 1; }

# The wheels ship versioned sonames only; the linker wants the plain names.
(cd "$CUDA_ROOT/lib" &&
  for l in cudart cublas cublasLt nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done &&
  ln -sf libcurand.so.10 libcurand.so)

# No wheel carries the driver library. Link against a stub exporting every driver symbol
# cudarc declares; its SONAME makes the real libcuda.so.1 load at run time.
cargo fetch >&2
CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* | sort -V | tail -n 1)
mkdir -p "$CUDA_ROOT/lib/stubs"
grep -ohE "^pub unsafe fn cu[A-Za-z0-9_]+\(" "$CUDARC_SRC/src/driver/sys/mod.rs" \
  | sed -E 's/pub unsafe fn ([A-Za-z0-9_]+)\(/int \1(void){return 999;}/' | sort -u \
  > "$CUDA_ROOT/lib/stubs/cuda_stub.c"
[ -s "$CUDA_ROOT/lib/stubs/cuda_stub.c" ] || { echo "no driver symbols found in $CUDARC_SRC" >&2; exit 1; }
gcc -shared -fPIC -o "$CUDA_ROOT/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 \
  "$CUDA_ROOT/lib/stubs/cuda_stub.c"
ln -sf libcuda.so "$CUDA_ROOT/lib/stubs/libcuda.so.1"  # lets the CPU paths run here

echo "export CUDA_ROOT=$CUDA_ROOT"
echo "export PATH=$CUDA_ROOT/bin:\$PATH"
echo "export CUDA_COMPUTE_CAP=90"
echo "export LIBRARY_PATH=$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
echo "export LD_LIBRARY_PATH=$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"

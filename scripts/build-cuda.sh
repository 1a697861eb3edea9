#!/usr/bin/env bash
# Builds protocon with the `cuda` feature on a machine without a GPU or a CUDA install.
#
#   scripts/build-cuda.sh [build|check]      (default: build)
#
# The CUDA toolkit comes from PyPI's NVIDIA wheels, pinned to CUDA 13.0: nvcc (candle's kernels
# are compiled to PTX and, for its quantised matmuls, to sm_XX code), the runtime headers, and
# for linking cuBLAS, cuBLASLt, cuRAND and NVRTC. 13.0 because the lent H100/H200 machines run
# driver 580 (CUDA 13.0): PTX from a newer nvcc would not load there.
#
# Environment:
#   CUDA_COMPUTE_CAP   target compute capability, default 90 (H100, H200)
#   CUDA_TOOLKIT_DIR   where the wheels are installed, default target/cuda-toolkit
#   CARGO_TARGET_DIR   default target/cuda (its own, so the CPU build is not rebuilt)
#
# Linking needs libcuda.so, which only a GPU driver installs. The build links against a stub
# made here (every driver entry point cudarc's bindings declare, each an empty function; the
# toolkit's own lib/stubs/libcuda.so is the same idea) whose soname is libcuda.so.1, so the
# binary loads the machine's real driver library at run time. On the GPU machine, the binary
# finds cuBLAS, cuRAND and NVRTC (sonames libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libnvrtc.so.13) through LD_LIBRARY_PATH: scripts/gpu-check.sh points it at PyTorch's copies.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-build}
case "$mode" in build | check) ;; *) echo "usage: $0 [build|check]" >&2; exit 2 ;; esac
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
toolkit=${CUDA_TOOLKIT_DIR:-$PWD/target/cuda-toolkit}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}

# What each mode needs: nvcc and its headers always; the libraries only to link.
wheels=(
  "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85"
)
if [[ $mode == build ]]; then
  wheels+=("nvidia-cuda-nvrtc==13.0.88" "nvidia-curand==10.4.0.35" "nvidia-cublas==13.0.2.14")
fi

if [[ ! -x $toolkit/venv/bin/pip ]]; then
  python3 -m venv "$toolkit/venv"
fi
"$toolkit/venv/bin/pip" install --quiet --no-deps "${wheels[@]}"
cuda_home=$(echo "$toolkit"/venv/lib/python3*/site-packages/nvidia/cu13)
[[ -x $cuda_home/bin/nvcc ]] || { echo "build-cuda: no nvcc in $cuda_home" >&2; exit 1; }

if [[ $mode == build ]]; then
  # The linker wants unversioned names; the wheels ship only the sonames.
  for lib in cublas cublasLt curand nvrtc cudart; do
    real=$(ls "$cuda_home"/lib/lib$lib.so.* | head -1)
    ln -sf "$(basename "$real")" "$cuda_home/lib/lib$lib.so"
  done
  # In lib/ itself, not lib/stubs: cudarc's build script lists the library folders once, and
  # after a `check` (no stubs made) it would not look again.
  stubs=$cuda_home/lib
  if [[ ! -e $stubs/libcuda.so ]]; then
    cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
      python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
    # The names its `extern "C"` blocks link to (one per line, `fn cuInit(Flags: ...`).
    grep -ho '^ *fn cu[A-Za-z0-9_]*(' "$(dirname "$cudarc")"/src/driver/sys/mod.rs | sort -u |
      sed 's/^ *fn \(cu[A-Za-z0-9_]*\)(/void \1(void) {}/' > "$stubs/libcuda.c"
    [[ -s $stubs/libcuda.c ]] || { echo "build-cuda: no driver entry points found in $cudarc's bindings" >&2; exit 1; }
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda.c"
  fi
fi

export CUDA_HOME=$cuda_home CUDA_PATH=$cuda_home PATH=$cuda_home/bin:$PATH
echo "build-cuda: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP, target $CARGO_TARGET_DIR" >&2
cargo "$mode" --release --features cuda -p protocon-pipelines
if [[ $mode == build ]]; then
  bin=$CARGO_TARGET_DIR/release/protocon
  echo "build-cuda: $bin; the shared libraries it needs:" >&2
  readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p' >&2
fi

#!/usr/bin/env bash
# The prepared GPU check (issue 21), in two halves:
#
#   scripts/gpu-check.sh prepare    here, on the CPU machine: builds the CUDA binary
#                                   (scripts/build-cuda.sh), strips it, and cuts the Fashion-MNIST
#                                   files down to what the check trains on, into target/gpu-check/
#                                   (about 25 MB: under the device tool's 64 MiB carry limit)
#   scripts/gpu-check.sh run        on the lent GPU machine (nvcc, PyTorch and the CUDA libraries,
#                                   no Rust), as one call of the device tool with
#                                   carry = ["target/gpu-check"]; writes its report to $OUT
#
# What `run` measures, each part in $OUT/gpu-check.txt (and JSON files beside it):
#  (a) `bench step` on cuda:0, WRN-28-2, 64 + 448 + 448, against PyTorch's step_torch.py on the
#      same card: images/s and the peak of device memory in use (total - free) on both sides;
#  (b) 200 training steps of configs/fashion-mnist-40-protocon.toml on cuda:0 and on the CPU
#      (16 threads), compared by benches/reference/compare_runs.py: the loss of every logged step
#      within 2% (relative) up to step 50, and the EMA test accuracy after 100 and 200 steps within
#      3 points (GPU and CPU reduce in other orders, so runs drift apart, slowly: two CPU runs
#      with 2 and 16 threads differ by up to 1.3% in loss over 40 steps); a second CPU run with
#      8 threads shows the CPU-against-CPU spread beside it;
#  (c) `bench pipeline` with the augmentation on the machine's cores: at 32 px (the same config)
#      and at 224 px (per-sample JPEG decoding, ResNet-50, SimCLR view, on 2,000 synthetic JPEGs
#      made there): the profiler table, i.e. whether compute or augmentation is the bottleneck.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/gpu-check

prepare() {
  scripts/build-cuda.sh build
  mkdir -p "$dir/data/fashion-mnist"
  # Stripped, the binary is 71 MB (candle's PTX and the sm_90 code of its quantised kernels);
  # gzipped, 17 MB.
  objcopy --strip-all target/cuda/release/protocon "$dir/protocon"
  gzip -9 -f "$dir/protocon"
  # The default config trains on the first 6,000 images and tests on all 10,000.
  python3 - "$dir/data/fashion-mnist" <<'EOF'
import gzip, pathlib, struct, sys
src, out = pathlib.Path("data/fashion-mnist"), pathlib.Path(sys.argv[1])
for name, keep in [("train-images-idx3-ubyte.gz", 6000), ("train-labels-idx1-ubyte.gz", 6000),
                   ("t10k-images-idx3-ubyte.gz", None), ("t10k-labels-idx1-ubyte.gz", None)]:
    raw = gzip.decompress((src / name).read_bytes())
    dims = raw[3]
    shape = list(struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims]))
    if keep is not None:
        per = len(raw[4 + 4 * dims:]) // shape[0]
        shape[0] = keep
        raw = raw[:4] + struct.pack(">" + "I" * dims, *shape) + raw[4 + 4 * dims:4 + 4 * dims + keep * per]
    (out / name).write_bytes(gzip.compress(raw, 6))
EOF
  du -sh "$dir"
  echo "gpu-check: ready. On a lent machine: run with command 'scripts/gpu-check.sh run', carry [\"$dir\"], timeout_s 420" >&2
}

run() {
  out=${OUT:-$dir/out}
  mkdir -p "$out"
  bin=$dir/protocon
  gunzip -c "$bin.gz" > "$bin" && chmod +x "$bin"
  report=$out/gpu-check.txt
  exec > >(tee "$report") 2>&1
  # cuBLAS, cuRAND and NVRTC from PyTorch's wheels (the binary links their CUDA 13 sonames);
  # libcuda.so.1 from the driver.
  libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/**/lib*.so*", recursive=True)})))')
  # The driver's folder, where a container mounts it rather than installing it.
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do [[ -d $d ]] && libs=$libs:$d; done
  export LD_LIBRARY_PATH=$libs:${LD_LIBRARY_PATH:-}
  echo "== machine"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  echo "== libraries"; ldd "$bin" | grep -E "cuda|cublas|curand|nvrtc|not found" || true
  if ldd "$bin" | grep -q "not found"; then echo "gpu-check: a library is missing (above)"; exit 1; fi
  fm="fashion-mnist:$dir/data/fashion-mnist"
  # From here on a failing part is reported in its output and the next part still runs.
  set +e

  echo "== (a) WRN-28-2 step, 64 + 448 + 448, cuda:0 against PyTorch on the same card"
  "$bin" bench step --device cuda:0 --model wrn-28-2 --labeled 64 --unlabeled 448 --threads 16 --warmup 2 --steps 6 --baseline none --json | tee "$out/step-protocon.json"
  python3 benches/reference/step_torch.py --device cuda --model wrn-28-2 --labeled 64 --unlabeled 448 --threads 16 --warmup 2 --steps 6 --json | tee "$out/step-torch.json"
  python3 - "$out" <<'EOF'
import json, sys
o = sys.argv[1]
p, t = json.load(open(o + "/step-protocon.json")), json.load(open(o + "/step-torch.json"))
print(f"protocon {p['fused']['images_per_s']:.0f} img/s, {p['peak_device_memory_bytes'] / 1e9:.2f} GB in use; "
      f"PyTorch {t['images_per_s']:.0f} img/s, {t['peak_device_memory_bytes'] / 1e9:.2f} GB in use; "
      f"ratio {p['fused']['images_per_s'] / t['images_per_s']:.3f}x img/s (bar >= 0.5x), "
      f"{p['peak_device_memory_bytes'] / t['peak_device_memory_bytes']:.2f}x memory")
EOF

  echo "== (b) 200 steps of fashion-mnist-40-protocon, cuda:0 against the CPU"
  common=(--config configs/fashion-mnist-40-protocon.toml --quiet --set "data.dataset=$fm" --set train.steps=200
          --set train.eval_every=100 --set train.log_every=10 --set train.checkpoint_every=100 --set threads.weak_workers=4 --set threads.strong_workers=8)
  "$bin" train "${common[@]}" --device cuda:0 --out "$out/run-cuda" | tail -12
  "$bin" train "${common[@]}" --device cpu --set threads.compute=16 --out "$out/run-cpu" | tail -3
  "$bin" train "${common[@]}" --device cpu --set threads.compute=8 --out "$out/run-cpu8" | tail -1
  echo "-- CPU 16 threads against CPU 8 threads (the spread between CPU runs; not judged)"
  python3 benches/reference/compare_runs.py "$out/run-cpu" "$out/run-cpu8" --loss-until 50 || true
  echo "-- cuda:0 against CPU 16 threads"
  python3 benches/reference/compare_runs.py "$out/run-cuda" "$out/run-cpu" --loss-rtol 0.02 --loss-until 50 --acc-atol 0.03 || echo "gpu-check: (b) FAILED (above); going on with (c)"

  echo "== (c) the pipeline on $(nproc) cores: 32 px"
  "$bin" bench pipeline --config configs/fashion-mnist-40-protocon.toml --steps 60 --set "data.dataset=$fm" \
    --set device.kind=cuda:0 --set threads.weak_workers=6 --set threads.strong_workers=9
  echo "== (c) 224 px JPEG, ResNet-50, SimCLR view"
  python3 - "$dir/jpegs" <<'EOF'
import numpy as np, pathlib, sys
from PIL import Image
root = pathlib.Path(sys.argv[1]); rng = np.random.default_rng(0)
for split, n in [("train", 1000), ("test", 50)]:
    for c in range(2):
        d = root / split / str(c); d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.linspace(0, 255, 480)[None, :, None] * [1, 0.6 + 0.4 * c, 1 - 0.5 * c]
            img = np.clip(base + rng.normal(0, 40, (360, 480, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
EOF
  "$bin" bench pipeline --config configs/imagenet-1pct-protocon.toml --steps 12 --warmup 2 --set "data.dataset=folder:$dir/jpegs" \
    --set device.kind=cuda:0 --set train.labeled_batch=8 --set protocon.min_cluster_size=100 \
    --set threads.weak_workers=5 --set threads.strong_workers=10 --set threads.compute=1
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac

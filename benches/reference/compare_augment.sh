#!/usr/bin/env bash
# Interleaved comparison of `protocon bench augment` with the PIL reference, one thread each.
#
# On a shared or virtual machine one process can run 15% faster or slower than the next, so a
# ratio of two figures taken minutes apart moves by that much. This script alternates the two
# sides round by round on the same inputs and prints every round's ratio and the ratio of the
# medians.
#
#   benches/reference/compare_augment.sh [--rounds R] [--images N] [--view V]... [--pil-malloc default] -- ARGS...
#
# Pillow allocates a new image per decode, crop and resize; at 224 px and above these are over
# glibc's initial mmap threshold (128 KiB), so depending on the process's allocation history
# each one may be mmap'ed, page-faulted and unmapped again. That churn made the PIL weak view of
# 500x375 JPEGs 25-30% slower in some processes than in others. The PIL side therefore runs with
# the threshold raised (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), which is Pillow at its
# fastest and the strict baseline; `--pil-malloc default` runs it with glibc's defaults instead.
# Our side reuses its buffers and is not affected either way.
#
# ARGS go to both sides (e.g. `--source jpeg --size 224 --data /tmp/jpegs420`, or `--size 32`).
# The Rust side times N images per run (default 1000 for JPEG, 20000 otherwise); PIL times half
# as many, since it is slower. Environment: PROTOCON (default target/release/protocon; build it with
# `cargo build --release`), PIL_PYTHON (default /tmp/pil/bin/python, a venv with pillow and numpy).
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=3
images=
views=()
pil_malloc=tuned
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --images) images="$2"; shift 2 ;;
    --view) views+=("$2"); shift 2 ;;
    --pil-malloc) pil_malloc="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (put the bench arguments after --)" >&2; exit 2 ;;
  esac
done
[ ${#views[@]} -gt 0 ] || views=(strong weak both)
case "$pil_malloc" in
  tuned) pil_env=(MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=134217728) ;;
  default) pil_env=() ;;
  *) echo "--pil-malloc takes tuned or default, not $pil_malloc" >&2; exit 2 ;;
esac
protocon="${PROTOCON:-target/release/protocon}"
python="${PIL_PYTHON:-/tmp/pil/bin/python}"
[ -x "$protocon" ] || { echo "no $protocon: run cargo build --release, or set PROTOCON" >&2; exit 2; }
"$python" -c "import PIL, numpy" || { echo "$python lacks pillow/numpy: set PIL_PYTHON" >&2; exit 2; }

if [ -z "$images" ]; then
  images=20000
  for a in "$@"; do [ "$a" = jpeg ] && images=1000; done
fi

field() { "$python" -c "import json, sys; d = json.load(sys.stdin); print(d$1)"; }

for view in "${views[@]}"; do
  ours=() pil=()
  for _ in $(seq "$rounds"); do
    ours+=("$("$protocon" bench augment --json --threads 1 --images "$images" --view "$view" "$@" \
      | field "['images_per_s_per_thread']['median']")")
    pil+=("$(env "${pil_env[@]}" "$python" benches/reference/randaugment_pil.py --json --images $((images / 2)) --view "$view" "$@" \
      | field "['images_per_s']['median']")")
  done
  "$python" - "$view" "${ours[*]}" "${pil[*]}" "$pil_malloc" <<'EOF'
import statistics, sys
view, ours, pil = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
rounds = " ".join(f"{o:.0f}/{p:.0f}={o / p:.2f}x" for o, p in zip(ours, pil))
print(f"{view} (PIL malloc {sys.argv[4]}): protocon {statistics.median(ours):.0f} images/s, PIL {statistics.median(pil):.0f} images/s, "
      f"ratio of medians {statistics.median(ours) / statistics.median(pil):.2f}x (rounds: {rounds})")
EOF
done

#!/usr/bin/env bash
# The SimCLR-style strong view at 224 px, per core: `protocon bench augment --source jpeg --size 224
# --view strong` with the chain [random_resized_crop(224), simclr] against torchvision's transforms
# on PIL images (simclr_view_torchvision.py), on the same JPEG files, alternating round by round;
# prints each round and the ratio of the medians (above 1: protocon is faster).
#
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch torchvision
#   cargo build --release
#   benches/reference/compare_simclr_view.sh            # 3 rounds of 300 images, synthetic 480x360 JPEGs
#   DATA=/path/to/jpegs ROUNDS=5 benches/reference/compare_simclr_view.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-/tmp/torchenv/bin/python}
BIN=${BIN:-target/release/protocon}
ROUNDS=${ROUNDS:-3}
IMAGES=${IMAGES:-300}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf 'weak = [{ name = "random_resized_crop", size = 224 }, "flip"]\nstrong = [{ name = "random_resized_crop", size = 224 }, "simclr"]\n' > "$TMP/augment.toml"
DATA=${DATA:-}
if [ -z "$DATA" ]; then
  DATA="$TMP/jpegs"
  "$BIN" bench augment --source jpeg --size 224 --view strong --config "$TMP/augment.toml" --images 10 --repeats 1 --warmup 0 --write-jpegs "$DATA" > /dev/null
fi
field() { "$PY" -c "import json, sys; d = json.load(sys.stdin); print(d$1)"; }
ours=() theirs=()
for r in $(seq "$ROUNDS"); do
  a=$("$BIN" bench augment --source jpeg --size 224 --view strong --config "$TMP/augment.toml" --images "$IMAGES" --threads 1 --data "$DATA" --json | field "['images_per_s_per_thread']['median']")
  b=$("$PY" benches/reference/simclr_view_torchvision.py --data "$DATA" --images "$IMAGES" --json | field "['images_per_s']['median']")
  ours+=("$a") theirs+=("$b")
  printf 'round %d: protocon %.1f images/s, torchvision %.1f images/s, ratio %.2f\n' "$r" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
mo=$(median "${ours[@]}") mt=$(median "${theirs[@]}")
printf 'median: protocon %.1f images/s, torchvision %.1f images/s per core: %.2fx\n' "$mo" "$mt" "$(echo "$mo / $mt" | bc -l)"

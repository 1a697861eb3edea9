#!/usr/bin/env bash
# One training step, protocon's fused kernels against PyTorch CPU on the same model, batch and
# threads: `protocon bench step` and step_torch.py alternate, round by round (each round is a
# warm-up and STEPS timed steps per side, the median kept); the script prints every round, the
# ratio of the medians of the rounds' images/s (above 1: protocon is faster) and the ratio of
# peak RSS (below 1: protocon holds less).
#
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
#   cargo build --release
#   benches/reference/compare_step.sh                                   # cnn-small 8+56+56
#   MODEL=wrn-28-2 LABELED=16 UNLABELED=112 benches/reference/compare_step.sh
#   MODEL=cnn-small LABELED=64 UNLABELED=448 ROUNDS=3 benches/reference/compare_step.sh
#   MODEL=resnet50 LABELED=4 UNLABELED=12 SIZE=224 ROUNDS=3 STEPS=3 benches/reference/compare_step.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-/tmp/torchenv/bin/python}
BIN=${BIN:-target/release/protocon}
MODEL=${MODEL:-cnn-small}
LABELED=${LABELED:-8}
UNLABELED=${UNLABELED:-56}
SIZE=${SIZE:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}
STEPS=${STEPS:-10}
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }
"$PY" -c "import torch" 2>/dev/null || { echo "$PY has no torch: see the header of $0" >&2; exit 1; }
field() { "$PY" -c "import json, sys; d = json.loads(sys.stdin.read()); print(eval(sys.argv[1], {}, d))" "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ours=() theirs=() ours_rss=() theirs_rss=()
echo "$(nproc) cores; $MODEL at ${SIZE}px $LABELED+$UNLABELED+$UNLABELED, $THREADS threads each side, $ROUNDS rounds of $STEPS steps"
for r in $(seq 1 "$ROUNDS"); do
  a=$("$BIN" bench step --model "$MODEL" --size "$SIZE" --labeled "$LABELED" --unlabeled "$UNLABELED" --threads "$THREADS" \
    --baseline none --steps "$STEPS" --json)
  b=$("$PY" benches/reference/step_torch.py --model "$MODEL" --size "$SIZE" --labeled "$LABELED" --unlabeled "$UNLABELED" \
    --threads "$THREADS" --steps "$STEPS" --json)
  ia=$(echo "$a" | field 'fused["images_per_s"]') ib=$(echo "$b" | field 'images_per_s')
  ra=$(echo "$a" | field 'peak_rss_bytes') rb=$(echo "$b" | field 'peak_rss_bytes')
  ours+=("$ia") theirs+=("$ib") ours_rss+=("$ra") theirs_rss+=("$rb")
  printf 'round %d: protocon %.1f images/s (%.2f GB), PyTorch %.1f images/s (%.2f GB), ratio %.3f\n' \
    "$r" "$ia" "$(echo "$ra / 1000000000" | bc -l)" "$ib" "$(echo "$rb / 1000000000" | bc -l)" "$(echo "$ia / $ib" | bc -l)"
done
mo=$(median "${ours[@]}") mt=$(median "${theirs[@]}")
ro=$(median "${ours_rss[@]}") rt=$(median "${theirs_rss[@]}")
printf 'median: protocon %.1f images/s, PyTorch %.1f images/s: %.3fx PyTorch'"'"'s speed; peak RSS %.2f GB vs %.2f GB: %.2fx\n' \
  "$mo" "$mt" "$(echo "$mo / $mt" | bc -l)" "$(echo "$ro / 1000000000" | bc -l)" "$(echo "$rt / 1000000000" | bc -l)" "$(echo "$ro / $rt" | bc -l)"

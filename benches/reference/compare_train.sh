#!/usr/bin/env bash
# End to end, as a user sees it: `protocon train` (configs/fashion-mnist-40.toml, FixMatch,
# cnn-small) against train_torch.py (the same loop in PyTorch with PIL augmentation and
# DataLoader workers) for STEPS steps on the same data, split and cores, evaluation and
# checkpoints included. The two alternate, round by round; each round prints both wall times
# (process start to exit) and their ratio, then the ratio of the medians.
#
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy pillow
#   cargo build --release
#   benches/reference/compare_train.sh                 # 3 rounds of 300 steps, 2 threads
#   ROUNDS=5 STEPS=300 THREADS=2 WORKERS=2 benches/reference/compare_train.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-/tmp/torchenv/bin/python}
BIN=${BIN:-target/release/protocon}
DATA=${DATA:-}
STEPS=${STEPS:-300}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
if [ -z "$DATA" ]; then
  for d in data/fashion-mnist ../shared/data/fashion-mnist /usr/share/datasets/fashion-mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ] || [ -f "$d/train-images-idx3-ubyte" ]; then DATA=$d; break; fi
  done
fi
[ -n "$DATA" ] || { echo "no Fashion-MNIST found: run \`$BIN data fetch fashion-mnist\` or set DATA=DIR" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }
"$PY" -c "import torch" 2>/dev/null || { echo "$PY has no torch: see the header of $0" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN" data split --dataset "fashion-mnist:$DATA" --labels-per-class 4 --seed 0 --out "$TMP/split.json" > /dev/null

now() { date +%s.%N; }
ours=() theirs=()
echo "$(nproc) cores, $THREADS compute threads each side; PyTorch with $WORKERS + 1 DataLoader workers; $STEPS steps, data $DATA"
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now)
  "$BIN" train --quiet --config configs/fashion-mnist-40.toml --split "$TMP/split.json" --out "$TMP/ours-$r" \
    --set "data.dataset=fashion-mnist:$DATA" --set "train.steps=$STEPS" --set "threads.compute=$THREADS" > "$TMP/ours-$r.log" 2>&1
  t1=$(now)
  "$PY" benches/reference/train_torch.py --data "$DATA" --split "$TMP/split.json" --steps "$STEPS" \
    --threads "$THREADS" --workers "$WORKERS" --out "$TMP/torch-$r" > "$TMP/torch-$r.log" 2>&1
  t2=$(now)
  a=$(echo "$t1 - $t0" | bc) b=$(echo "$t2 - $t1" | bc)
  ours+=("$a") theirs+=("$b")
  acc_ours=$(grep -o 'EMA [0-9.]*%' "$TMP/ours-$r.log" | tail -n 1)
  acc_torch=$(grep -o 'EMA [0-9.]*%' "$TMP/torch-$r.log" | tail -n 1)
  printf 'round %d: protocon %.1f s (%s), PyTorch %.1f s (%s), ratio %.3f\n' "$r" "$a" "$acc_ours" "$b" "$acc_torch" "$(echo "$a / $b" | bc -l)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
mo=$(median "${ours[@]}") mt=$(median "${theirs[@]}")
printf 'median: protocon %.1f s, PyTorch %.1f s: protocon takes %.3fx the PyTorch loop'"'"'s wall time\n' "$mo" "$mt" "$(echo "$mo / $mt" | bc -l)"

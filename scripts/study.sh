#!/usr/bin/env bash
# The Fashion-MNIST-40 study (issue 6): supervised-only vs FixMatch vs ProtoCon, 3 seeds each,
# equal step budgets, splits made with `protocon data split`. Diagnostic variants:
# protocon-dual-lr-2.5 (dual learning rate scaled to this batch and K), protocon-mask-pw (mask from
# the classifier's confidence, an option beyond the paper) and protocon-dual-lr-2.5-mask-pw (both);
# ablations of the latter: protocon-both-no-lc (weight_c = 0), protocon-both-no-lp (Lp_x, Lp_u off).
# Writes runs under $OUT, an overlay figure and a summary table (docs/results.md is written from it
# by hand). Finished runs (a `done` file) are skipped, so the script resumes.
#
#   scripts/study.sh                                   # the three algorithms, seeds 0 1 2, 2 at a time
#   SEEDS="0" VARIANTS="protocon-dual-lr-2.5" scripts/study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/protocon}
OUT=${OUT:-runs/study}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"supervised fixmatch protocon"}
JOBS=${JOBS:-2}
DATA=${DATA:-fashion-mnist}
CONFIG=configs/fashion-mnist-40-protocon.toml
LIMIT=6000
mkdir -p "$OUT"
[ -x "$BIN" ] || cargo build --release

for seed in $SEEDS; do
  [ -f "$OUT/split-$seed.json" ] || "$BIN" data split --dataset "$DATA" --labels-per-class 4 --seed "$seed" --limit "$LIMIT" --out "$OUT/split-$seed.json"
done

run() { # variant seed
  local variant=$1 seed=$2 extra=()
  local both=(--set algorithm=protocon --set protocon.dual_lr=2.5 --set protocon.mask_from=classifier)
  case $variant in
    supervised|fixmatch|protocon) extra=(--set "algorithm=$variant") ;;
    protocon-mask-pw) extra=(--set algorithm=protocon --set protocon.mask_from=classifier) ;;
    protocon-dual-lr-2.5) extra=(--set algorithm=protocon --set protocon.dual_lr=2.5) ;;
    protocon-dual-lr-2.5-mask-pw) extra=("${both[@]}") ;;
    protocon-both-no-lc) extra=("${both[@]}" --set protocon.weight_c=0) ;;
    protocon-both-no-lp) extra=("${both[@]}" --set protocon.weight_px=0 --set protocon.weight_pu=0) ;;
    *) echo "unknown variant $variant" >&2; return 1 ;;
  esac
  local dir="$OUT/$variant-$seed"
  if [ -f "$dir/done" ]; then return 0; fi
  local start=$SECONDS
  "$BIN" train --quiet --config "$CONFIG" --split "$OUT/split-$seed.json" --out "$dir" \
    --set "data.dataset=$DATA" --set "seed=$seed" --set "name=$variant-$seed" --set threads.compute=1 \
    "${extra[@]}" > "$dir.log" 2>&1
  echo $((SECONDS - start)) > "$dir/done"
  echo "$variant seed $seed: $(tail -n 3 "$dir.log" | grep 'after' || true) ($((SECONDS - start)) s)"
}
export -f run
export BIN OUT CONFIG DATA
for variant in $VARIANTS; do for seed in $SEEDS; do echo "$variant $seed"; done; done \
  | xargs -P "$JOBS" -L 1 bash -c 'run "$0" "$1"'

dirs=()
for variant in $VARIANTS; do for seed in $SEEDS; do dirs+=("$OUT/$variant-$seed"); done; done
"$BIN" plot --out "$OUT/study.png" "${dirs[@]}"
python3 - "$OUT" $VARIANTS <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| variant | seeds | final EMA acc % (mean ± sd) | best EMA acc % (mean ± sd) | mask rate, last 100 steps | cluster-label acc %, last 100 steps | wall time / run |")
print("|---|---|---|---|---|---|---|")
for v in sys.argv[2:]:
    runs = sorted(out.glob(f"{v}-[0-9]*/metrics.jsonl"))
    if not runs:
        continue
    final, best, mask, wall, clacc = [], [], [], [], []
    for m in runs:
        recs = [json.loads(l) for l in m.read_text().splitlines()]
        evals = [r for r in recs if r["kind"] == "eval"]
        trains = [r for r in recs if r["kind"] == "train"]
        final.append(100 * evals[-1]["test_acc_ema"]); best.append(100 * evals[-1]["best_test_acc_ema"])
        cl = [r["cluster_label_acc"] for r in trains[-10:] if r.get("cluster_label_acc") is not None]
        clacc.append(100 * statistics.mean(cl) if cl else float("nan"))
        mask.append(statistics.mean(r["mask_rate"] for r in trains[-10:]))
        done = m.parent / "done"
        if done.exists():
            wall.append(int(done.read_text()))
    sd = lambda x: statistics.stdev(x) if len(x) > 1 else 0.0
    print(f"| {v} | {len(runs)} | {statistics.mean(final):.2f} ± {sd(final):.2f} | {statistics.mean(best):.2f} ± {sd(best):.2f} | {statistics.mean(mask):.2f} | {statistics.mean(clacc):.1f} | {f'{statistics.mean(wall):.0f} s' if wall else 'n/a'} |")
PY

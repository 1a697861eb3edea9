#!/usr/bin/env bash
# The Fashion-MNIST-40 study: supervised-only vs FixMatch vs ProtoCon, 3 seeds each, equal step
# budgets, splits made with `protocon data split`. Variants:
#   supervised, fixmatch          the baselines
#   protocon                      ProtoCon's defaults (preset "default": dual_lr = "auto")
#   protocon-paper                the paper's exact settings (preset "paper": dual_lr = 20)
# Early-phase ablations (issue 17; run with EXTRA="--set protocon.refine_after_epochs=1000" so
# that no refinement happens), each switching one difference from FixMatch off:
#   protocon-no-target-debias     debias_margin = 0 (pw is the plain softmax), strong margin kept
#   protocon-no-strong-margin     strong_margin = 0 (no margin on the strong logits in Lu)
#   protocon-hard-target          target = "hard" (argmax p_hat, as FixMatch)
#   protocon-prior-0.99           prior_momentum = 0.99 (the debias prior adapts 10x faster)
#   protocon-fixmatch-targets     all three of the first: FixMatch's pseudo-labels and loss
#   protocon-fixmatch-targets-no-lc / -no-lp / -no-proj
#                                 that, and Lc off / Lp_x and Lp_u off / all three projection
#                                 losses off (-no-proj must train exactly as FixMatch does)
# Earlier diagnostics (docs/results.md, first study): protocon-dual-lr-2.5, protocon-mask-pw,
# protocon-dual-lr-2.5-mask-pw, protocon-both-no-lc, protocon-both-no-lp (all on the paper preset).
# Writes runs under $OUT, an overlay figure, the results table (`protocon compare --md`, also in
# $OUT/table.md: the README's table) and pseudo-label diagnostics. Finished runs (a `done` file) are skipped and cut-off runs continue from their last
# checkpoint, so the script resumes.
#
#   scripts/study.sh                                   # the main comparison, seeds 0 1 2, 2 at a time
#   SEEDS="0" VARIANTS="protocon-paper" STEPS=3000 scripts/study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/protocon}
OUT=${OUT:-runs/study}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"supervised fixmatch protocon protocon-paper"}
STEPS=${STEPS:-1000}
EXTRA=${EXTRA:-}
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
  local paper=(--set algorithm=protocon --set protocon.preset=paper)
  local both=("${paper[@]}" --set protocon.dual_lr=2.5 --set protocon.mask_from=classifier)
  case $variant in
    supervised|fixmatch|protocon) extra=(--set "algorithm=$variant") ;;
    protocon-paper) extra=("${paper[@]}") ;;
    protocon-no-target-debias) extra=(--set algorithm=protocon --set protocon.debias_margin=0 --set protocon.strong_margin=0.5) ;;
    protocon-no-strong-margin) extra=(--set algorithm=protocon --set protocon.strong_margin=0) ;;
    protocon-hard-target) extra=(--set algorithm=protocon --set protocon.target=hard) ;;
    protocon-prior-0.99) extra=(--set algorithm=protocon --set protocon.prior_momentum=0.99) ;;
    protocon-fixmatch-targets*)
      extra=(--set algorithm=protocon --set protocon.debias_margin=0 --set protocon.strong_margin=0 --set protocon.target=hard)
      case $variant in
        protocon-fixmatch-targets) ;;
        *-no-lc) extra+=(--set protocon.weight_c=0) ;;
        *-no-lp) extra+=(--set protocon.weight_px=0 --set protocon.weight_pu=0) ;;
        *-no-proj) extra+=(--set protocon.weight_c=0 --set protocon.weight_px=0 --set protocon.weight_pu=0) ;;
        *) echo "unknown variant $variant" >&2; return 1 ;;
      esac ;;
    protocon-mask-pw) extra=("${paper[@]}" --set protocon.mask_from=classifier) ;;
    protocon-dual-lr-2.5) extra=("${paper[@]}" --set protocon.dual_lr=2.5) ;;
    protocon-dual-lr-2.5-mask-pw) extra=("${both[@]}") ;;
    protocon-both-no-lc) extra=("${both[@]}" --set protocon.weight_c=0) ;;
    protocon-both-no-lp) extra=("${both[@]}" --set protocon.weight_px=0 --set protocon.weight_pu=0) ;;
    *) echo "unknown variant $variant" >&2; return 1 ;;
  esac
  # shellcheck disable=SC2206
  extra+=(--set "train.steps=$STEPS" $EXTRA)
  local dir="$OUT/$variant-$seed"
  if [ -f "$dir/done" ]; then return 0; fi
  # A run cut off (session end, kill) continues from its last checkpoint; its wall time then
  # counts only the part after the resume, and a `resumed` file says so.
  local resume=()
  if [ -f "$dir/checkpoint.safetensors" ]; then resume=(--resume "$dir"); touch "$dir/resumed"; fi
  local start=$SECONDS
  # `done` only for a run that finished: a killed or failed one resumes next time (the function
  # runs in `bash -c`, where `set -e` does not hold).
  if ! "$BIN" train --quiet --config "$CONFIG" --split "$OUT/split-$seed.json" --out "$dir" \
    --set "data.dataset=$DATA" --set "seed=$seed" --set "name=$variant-$seed" --set threads.compute=1 \
    "${extra[@]}" "${resume[@]}" >> "$dir.log" 2>&1; then
    echo "$variant seed $seed: failed or stopped after $((SECONDS - start)) s (see $dir.log)"
    return 1
  fi
  echo $((SECONDS - start)) > "$dir/done"
  echo "$variant seed $seed: $(tail -n 3 "$dir.log" | grep 'after' || true) ($((SECONDS - start)) s)"
}
export -f run
export BIN OUT CONFIG DATA STEPS EXTRA
for seed in $SEEDS; do for variant in $VARIANTS; do echo "$variant $seed"; done; done \
  | xargs -P "$JOBS" -L 1 bash -c 'run "$0" "$1"'

dirs=() done_dirs=()
for variant in $VARIANTS; do for seed in $SEEDS; do
  if [ -f "$OUT/$variant-$seed/metrics.jsonl" ]; then dirs+=("$OUT/$variant-$seed"); fi
  if [ -f "$OUT/$variant-$seed/done" ]; then done_dirs+=("$OUT/$variant-$seed"); fi
done; done
"$BIN" plot --out "$OUT/study.png" "${dirs[@]}"
# The README's table: final and best EMA accuracy, mean ± sd, wall time, images/s (finished runs).
if [ ${#done_dirs[@]} -gt 0 ]; then "$BIN" compare --md "${done_dirs[@]}" | tee "$OUT/table.md"; fi
# Pseudo-label diagnostics of the finished runs, over their last 100 steps.
python3 - "$OUT" $VARIANTS <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
print()
print("| variant | seeds | EMA acc % at step 200 | mask rate | masked pseudo-label acc | cluster-label acc % |")
print("|---|---|---|---|---|---|")
for v in sys.argv[2:]:
    mask, mpl, clacc, at200 = [], [], [], []
    for m in sorted(out.glob(f"{v}-[0-9]*/metrics.jsonl")):
        if not (m.parent / "done").exists():
            continue  # still training (or cut off): not in the table
        recs = [json.loads(l) for l in m.read_text().splitlines()]
        evals = [r for r in recs if r["kind"] == "eval"]
        trains = [r for r in recs if r["kind"] == "train"]
        at200 += [100 * r["test_acc_ema"] for r in evals if r["step"] + 1 == 200]  # the eval after 200 steps
        cl = [r["cluster_label_acc"] for r in trains[-10:] if r.get("cluster_label_acc") is not None]
        clacc.append(100 * statistics.mean(cl) if cl else float("nan"))
        mask.append(statistics.mean(r["mask_rate"] for r in trains[-10:]))
        kept = [r["pseudo_label_acc"] for r in trains[-10:] if r["mask_rate"] > 0]
        mpl.append(statistics.mean(kept) if kept else float("nan"))
    if not mask:
        continue
    sd = lambda x: statistics.stdev(x) if len(x) > 1 else 0.0
    a200 = f"{statistics.mean(at200):.2f} ± {sd(at200):.2f}" if at200 else "n/a"
    print(f"| {v} | {len(mask)} | {a200} | {statistics.mean(mask):.2f} | {statistics.mean(mpl):.2f} | {statistics.mean(clacc):.1f} |")
PY

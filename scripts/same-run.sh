#!/usr/bin/env bash
# Bit-identity check for refactors: trains supervised, FixMatch and ProtoCon for 50 steps
# (ProtoCon with refinement from epoch 1, so clustering, refinement and epoch ends all run) on
# the first 1,200 Fashion-MNIST images, and compares every metrics line, except the wall-clock
# `images_per_s` and `elapsed_s`, with tests/fixtures/run50/*.jsonl, recorded before the objective refactor
# (issue 19). Float results depend on the CPU's SIMD paths, so this is a script to run on the
# machine that recorded them (2-core AMD EPYC, AVX2), not a CI test; re-record with RECORD=1
# after a change that is meant to alter the numbers.
#
#   scripts/same-run.sh            # exit 0: identical
#   RECORD=1 scripts/same-run.sh   # write the fixtures from this build
#   CONV3X3=im2col scripts/same-run.sh   # with kernels.conv3x3 = "im2col" (default: winograd)
#
# The fixtures were re-recorded when Winograd became the default for 3x3 convolutions (issue
# 18): the im2col path still reproduced the earlier ones exactly, and Winograd's rounding moves
# the numbers slightly (BENCHMARKS.md says by how much).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/protocon}
[ -x "$BIN" ] || cargo build --release
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for alg in supervised fixmatch protocon; do
  "$BIN" train --quiet --config configs/fashion-mnist-40-protocon.toml --split tests/fixtures/run50/split.json \
    --out "$out/$alg" --set algorithm=$alg --set threads.compute=1 --set train.steps=50 \
    --set kernels.conv3x3="${CONV3X3:-winograd}" \
    --set train.eval_every=25 --set train.log_every=1 --set train.checkpoint_every=25 \
    --set data.train_limit=1200 --set data.test_limit=1000 \
    --set protocon.refine_after_epochs=1 --set protocon.refine_min_agreement=0 > "$out/$alg.log" 2>&1 \
    || { cat "$out/$alg.log"; exit 1; }
  if [ -n "${RECORD:-}" ]; then cp "$out/$alg/metrics.jsonl" "tests/fixtures/run50/$alg.jsonl"; fi
done
[ -n "${RECORD:-}" ] && { echo "recorded tests/fixtures/run50/"; exit 0; }
python3 - "$out" <<'PY'
import json, sys
ok = True
for alg in ["supervised", "fixmatch", "protocon"]:
    want = [json.loads(l) for l in open(f"tests/fixtures/run50/{alg}.jsonl")]
    got = [json.loads(l) for l in open(f"{sys.argv[1]}/{alg}/metrics.jsonl")]
    for r in want + got:
        r.pop("images_per_s", None)
        r.pop("elapsed_s", None)
    diff = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
    if diff is None and len(want) == len(got):
        print(f"{alg}: {len(got)} lines identical")
    else:
        ok = False
        print(f"{alg}: DIFFERENT" + (f" at line {diff + 1}:\n  want {want[diff]}\n  got  {got[diff]}" if diff is not None else f": {len(want)} vs {len(got)} lines"))
        # How far apart: the largest difference of each numeric field over all lines.
        far = {}
        for a, b in zip(want, got):
            for k, v in a.items():
                if isinstance(v, (int, float)) and isinstance(b.get(k), (int, float)) and k != "step":
                    far[k] = max(far.get(k, 0.0), abs(v - b[k]))
        print("  largest differences: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(far.items()) if v > 0))
sys.exit(0 if ok else 1)
PY

#!/usr/bin/env python3
"""Whether two runs of the same config trained alike: a GPU run against a CPU run (gpu-check.sh).

Reads both run directories' metrics.jsonl and compares
- the loss of every training record up to step --loss-until: |a - b| <= rtol * |b|;
- the EMA test accuracy of every evaluation both runs made: |a - b| <= atol (the raw model's
  accuracy is printed too, but early in training it swings by several points between two CPU
  runs that differ only in their thread count, so it is judged only with --judge-raw).
Prints one line per compared number and PASS or FAIL; exits 1 on FAIL.

Two CPU runs of 40 steps of configs/fashion-mnist-40-protocon.toml, 2 and 16 compute threads
(the reductions split differently): losses within 1.3%, EMA accuracy within 0.9 points, raw
accuracy 3.7 points apart after 20 steps.

Usage: compare_runs.py RUN_A RUN_B [--loss-rtol 0.02] [--loss-until 50] [--acc-atol 0.03] [--judge-raw]
"""
import argparse
import json
import pathlib
import sys


def records(run):
    lines = (pathlib.Path(run) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--loss-rtol", type=float, default=0.02)
    p.add_argument("--loss-until", type=int, default=50)
    p.add_argument("--acc-atol", type=float, default=0.03)
    p.add_argument("--judge-raw", action="store_true")
    args = p.parse_args()
    ra, rb = records(args.a), records(args.b)
    ok = True
    train_b = {r["step"]: r for r in rb if r["kind"] == "train"}
    compared = 0
    for r in (r for r in ra if r["kind"] == "train" and r["step"] <= args.loss_until):
        other = train_b.get(r["step"])
        if other is None:
            continue
        good = abs(r["loss"] - other["loss"]) <= args.loss_rtol * abs(other["loss"])
        ok &= good
        compared += 1
        print(f"step {r['step']:4d} loss {r['loss']:.5f} vs {other['loss']:.5f}  {'ok' if good else 'DIFFERENT'}")
    eval_b = {r["step"]: r for r in rb if r["kind"] == "eval"}
    for r in (r for r in ra if r["kind"] == "eval"):
        other = eval_b.get(r["step"])
        if other is None:
            continue
        for key in ["test_acc", "test_acc_ema"]:
            judged = key == "test_acc_ema" or args.judge_raw
            good = abs(r[key] - other[key]) <= args.acc_atol
            ok &= good or not judged
            compared += judged
            verdict = ("ok" if good else "DIFFERENT") if judged else "(not judged)"
            print(f"step {r['step']:4d} {key} {100 * r[key]:.2f}% vs {100 * other[key]:.2f}%  {verdict}")
    if compared == 0:
        print("nothing to compare: no common steps")
        ok = False
    print(f"{'PASS' if ok else 'FAIL'}: loss within {100 * args.loss_rtol:g}% up to step {args.loss_until}, "
          f"{'raw and EMA' if args.judge_raw else 'EMA'} accuracy within {100 * args.acc_atol:g} points")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

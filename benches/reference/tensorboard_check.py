"""Reads a protocon run directory with TensorBoard's own reader (EventAccumulator) and checks that
its scalars match metrics.jsonl: train/loss and test/test_acc_ema at every logged step.

    python3 -m venv /tmp/tbenv && /tmp/tbenv/bin/pip install tensorboard
    /tmp/tbenv/bin/python benches/reference/tensorboard_check.py runs/NAME

Prints MATCH (exit 0) or DIFFER (exit 1). Not needed by the tests, which parse the record framing
themselves (stages/src/tensorboard.rs, pipelines/tests/train.rs).
"""
import json, sys, glob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
run = sys.argv[1]
acc = EventAccumulator(run); acc.Reload()
tags = acc.Tags()["scalars"]
print(len(tags), "scalar tags:", ", ".join(sorted(tags)[:8]), "...")
loss = [(e.step, round(e.value, 5)) for e in acc.Scalars("train/loss")]
ema = [(e.step, round(e.value, 5)) for e in acc.Scalars("test/test_acc_ema")]
recs = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
want = [(r["step"] + 1, round(r["loss"], 5)) for r in recs if r["kind"] == "train"]
want_ema = [(r["step"] + 1, round(r["test_acc_ema"], 5)) for r in recs if r["kind"] == "eval"]
print("train/loss from TensorBoard:", loss)
print("metrics.jsonl             :", want)
print("test EMA:", ema, want_ema)
ok = loss == want and ema == want_ema
print("MATCH" if ok else "DIFFER")
sys.exit(0 if ok else 1)

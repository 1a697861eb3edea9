#!/usr/bin/env python3
"""Independent PyTorch reference of ProtoCon's per-step and end-of-epoch bookkeeping.

Written from docs/protocon.md sections 3-5 only (no network is run). Random logits and
projections are generated, the ProtoCon state machine (online constrained k-means with duals,
memory bank, debiased pseudo-labels, refinement with cluster pseudo-labels, the five losses and
their gradients, pbar / qbar updates, prototype accumulation, end-of-epoch cluster pseudo-labels
and prototypes) is run on them, and every input and output is written to a JSON fixture.

    /tmp/torchenv/bin/python benches/reference/protocon_reference.py \
        --out tests/fixtures/protocon_reference.json

Needs only torch, numpy and json. Deterministic (torch.manual_seed). float32 throughout except
the finite-difference gradient check (float64). Bank scores are stored as float16.
"""

import argparse
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- configuration
C, D, N, B, U, H, K = 3, 4, 40, 4, 8, 2, 4
T = 0.1
TAU = 0.6
LAMBDA = 20.0
GAMMA = 0.9
ALPHA = 0.8
DEBIAS = 0.5
PBAR_M = 0.999
QBAR_M = 0.9
DA_QUEUE = 32
EPOCH0_STEPS = 5
EPOCH1_STEPS = 3
LOGIT_SCALE = 2.0  # chosen (with SEED) so that masks are mixed at tau = 0.6
SEED = 15  # picked so that refinement flips some masks and z varies within a batch

F32 = torch.float32


def tl(x):
    """Tensor -> nested python list; float32 values become exactly-equal doubles."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.float16:
            x = x.float()
        return x.tolist()
    return x


def normalize_rows(x):
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- losses
def loss_terms(p_x, y, p_s, q_x, q_s, p_hat, mask, t, P, pbar):
    """The five losses; p_hat, mask, t, P, pbar are constants. Works in any float dtype."""
    lx = F.cross_entropy(p_x, y)
    lpx = F.cross_entropy(q_x @ P.t() / T, y)
    log_qs = F.log_softmax(p_s + DEBIAS * torch.log(pbar), dim=1)
    lu = (mask * -(p_hat * log_qs).sum(1)).mean()
    log_pu = F.log_softmax(q_s @ P.t() / T, dim=1)
    lpu = (mask * -(p_hat * log_pu).sum(1)).mean()
    log_c = F.log_softmax(q_s / T, dim=1)
    lc = ((1.0 - mask) * -(t * log_c).sum(1)).mean()
    return lx, lpx, lu, lpu, lc


# ---------------------------------------------------------------- state
class State:
    def __init__(self, init_centroids):
        self.centroids = init_centroids.clone()          # H x K x d
        self.duals = torch.zeros(H, K, dtype=F32)
        self.counters = torch.zeros(H, K, dtype=F32)     # m_k (integer-valued)
        self.pl = torch.full((N,), -1, dtype=torch.long)
        self.rel = torch.zeros(N, dtype=torch.long)
        self.a = torch.zeros(H, N, dtype=torch.long)
        self.s = torch.zeros(H, N, dtype=torch.float16)
        self.Z = torch.full((H, K, C), 1.0 / C, dtype=F32)
        self.P = torch.zeros(C, D, dtype=F32)
        self.proto_sum = torch.zeros(C, D, dtype=F32)
        self.proto_count = torch.zeros(C, dtype=torch.long)
        self.pbar = torch.full((C,), 1.0 / C, dtype=F32)
        self.qbar = torch.zeros(D, dtype=F32)
        self.da_queue = []

    def bank(self):
        return {"pl": tl(self.pl), "rel": tl(self.rel), "a": tl(self.a), "s": tl(self.s)}


def cluster_step(st, q_w, idx):
    """Online constrained k-means for every head. Returns assign [H][u], score [H][u]."""
    assigns, scores = [], []
    q = q_w.detach()
    for h in range(H):
        sc = q @ st.centroids[h].t() + st.duals[h]        # u x K
        s, a = sc.max(dim=1)                              # torch max: first index on ties
        # make the tie rule explicit and robust: first index reaching the max
        a = torch.argmax((sc == s[:, None]).to(torch.int64), dim=1)
        assigns.append(a)
        scores.append(s)
        st.a[h, idx] = a
        st.s[h, idx] = s.half()
        n = torch.bincount(a, minlength=K).to(F32)
        # dual ascent, then clamp (gamma < 1)
        st.duals[h] = torch.clamp(st.duals[h] + LAMBDA * (GAMMA / K - n / U), min=0.0)
        for k in range(K):
            nk = n[k].item()
            if nk == 0:
                continue
            m = st.counters[h, k]
            m_new = m + n[k]
            c = (m / m_new) * st.centroids[h, k] + q[a == k].sum(0) / m_new
            st.centroids[h, k] = c / c.norm()
            st.counters[h, k] = m_new
    return torch.stack(assigns), torch.stack(scores)


def train_step(st, inp, refine):
    idx = inp["indices"]
    y = inp["labels"]
    p_x, p_w, p_s = inp["p_x"], inp["p_w"], inp["p_s"]
    q_x, q_w, q_s = inp["q_x"], inp["q_w"], inp["q_s"]
    P_used = st.P.clone()
    pbar0 = st.pbar.clone()
    qbar0 = st.qbar.clone()

    # 2. clustering
    assign, score = cluster_step(st, q_w, idx)

    # 4. pseudo-labels: debias (main path) and distribution alignment (extra output)
    pw = F.softmax(p_w - DEBIAS * torch.log(pbar0), dim=1)
    sm_w = F.softmax(p_w, dim=1)
    st.da_queue.append(sm_w.mean(0))
    st.da_queue = st.da_queue[-DA_QUEUE:]
    pbar_da = torch.stack(st.da_queue).mean(0)
    pw_da = sm_w / pbar_da
    pw_da = pw_da / pw_da.sum(1, keepdim=True)

    # 5. refinement
    z = torch.zeros(U, C, dtype=F32)
    if refine:
        for h in range(H):
            z = z + st.Z[h][assign[h]]
        z = z / H
    if refine and bool((z != 0).any()):
        p_hat = ALPHA * pw + (1.0 - ALPHA) * z
    else:
        p_hat = pw.clone()

    # 6. mask
    mask = (p_hat.max(1).values >= TAU).to(F32)

    # 7-9. losses (t uses qbar before update)
    t = F.softmax((q_w - qbar0) / (T / 5.0), dim=1)
    leaves = [x.clone().requires_grad_(True) for x in (p_x, p_s, q_x, q_s)]
    terms = loss_terms(leaves[0], y, leaves[1], leaves[2], leaves[3], p_hat, mask, t, P_used, pbar0)
    loss = sum(terms)
    grads = torch.autograd.grad(loss, leaves)
    for v in terms + (loss,):
        assert math.isfinite(v.item()), "non-finite loss"

    # updates
    st.qbar = QBAR_M * qbar0 + (1.0 - QBAR_M) * t.mean(0)
    st.pbar = PBAR_M * pbar0 + (1.0 - PBAR_M) * sm_w.mean(0)

    # 11. bookkeeping
    pl = p_hat.argmax(1)
    st.pl[idx] = pl
    st.rel[idx] = mask.to(torch.long)
    for b in range(B):
        st.proto_sum[y[b]] += q_x[b]
        st.proto_count[y[b]] += 1
    for i in range(U):
        if mask[i] == 1:
            st.proto_sum[pl[i]] += q_w[i]
            st.proto_count[pl[i]] += 1

    assert torch.allclose(p_hat.sum(1), torch.ones(U), atol=1e-5), "p_hat rows must sum to 1"

    out = {
        "assign": tl(assign), "score": tl(score),
        "duals": tl(st.duals), "centroids": tl(st.centroids), "counters": tl(st.counters),
        "z": tl(z), "pw": tl(pw), "pw_da": tl(pw_da), "p_hat": tl(p_hat), "mask": tl(mask),
        "loss_x": terms[0].item(), "loss_px": terms[1].item(), "loss_u": terms[2].item(),
        "loss_pu": terms[3].item(), "loss_c": terms[4].item(), "loss": loss.item(),
        "grad_p_x": tl(grads[0]), "grad_p_s": tl(grads[1]),
        "grad_q_x": tl(grads[2]), "grad_q_s": tl(grads[3]),
        "pbar": tl(st.pbar), "qbar": tl(st.qbar), "prototypes": tl(P_used),
    }
    consts = dict(p_hat=p_hat, mask=mask, t=t, P=P_used, pbar=pbar0)
    return out, grads, consts


def cluster_labels(a, s16, pl, Zprev, n_heads, k_clusters, c_classes):
    """s.5 step 2. Returns (z_weighted, z_plain, sizes). Scores are the f16-stored values."""
    zw = Zprev.clone()
    zp = Zprev.clone()
    sizes = torch.zeros(n_heads, k_clusters, dtype=torch.long)
    s = s16.float()
    for h in range(n_heads):
        for k in range(k_clusters):
            members = (a[h] == k).nonzero().flatten()
            sizes[h, k] = len(members)
            if len(members) == 0:
                zw[h, k] = 0.0
                zp[h, k] = 0.0
                continue
            if bool((pl[members] < 0).any()):
                continue  # keep previous Z[h][k]
            cnt = torch.zeros(c_classes, dtype=F32)
            w = torch.zeros(c_classes, dtype=F32)
            for i in members.tolist():
                cnt[pl[i]] += 1.0
                w[pl[i]] += s[h, i]
            cw = cnt * w
            denom = cw.sum()
            assert denom.item() != 0.0, "weighted cluster label: zero denominator"
            zw[h, k] = cw / denom
            zp[h, k] = cnt / cnt.sum()
    return zw, zp, sizes


def end_of_epoch(st):
    st.counters.zero_()
    zw, zp, sizes = cluster_labels(st.a, st.s, st.pl, st.Z, H, K, C)
    st.Z = zw  # main path: weighted
    sum_before = st.proto_sum.clone()
    count_before = st.proto_count.clone()
    for c in range(C):
        if st.proto_count[c] > 0:
            v = st.proto_sum[c] / st.proto_count[c].to(F32)
            st.P[c] = v / v.norm()
    st.proto_sum.zero_()
    st.proto_count.zero_()
    return {
        "z_weighted": tl(zw), "z_plain": tl(zp), "cluster_sizes": tl(sizes),
        "prototypes": tl(st.P), "proto_sum_before_reset": tl(sum_before),
        "proto_count_before_reset": tl(count_before), "bank": st.bank(),
    }


def fd_check(inp, consts, grads32):
    """Central finite differences in float64 against autograd (float64 and the float32 grads)."""
    c64 = {k: v.double() for k, v in consts.items()}
    xs = [inp[k].double() for k in ("p_x", "p_s", "q_x", "q_s")]
    y = inp["labels"]

    def f(vals):
        return sum(loss_terms(vals[0], y, vals[1], vals[2], vals[3], c64["p_hat"], c64["mask"],
                              c64["t"], c64["P"], c64["pbar"]))

    leaves = [x.clone().requires_grad_(True) for x in xs]
    g64 = torch.autograd.grad(f(leaves), leaves)
    eps = 1e-6
    for j, x in enumerate(xs):
        fd = torch.zeros_like(x)
        for e in range(x.numel()):
            plus = [v.clone() for v in xs]
            minus = [v.clone() for v in xs]
            plus[j].view(-1)[e] += eps
            minus[j].view(-1)[e] -= eps
            fd.view(-1)[e] = (f(plus) - f(minus)) / (2 * eps)
        assert torch.allclose(fd, g64[j], atol=1e-6, rtol=1e-5), f"fd mismatch (input {j})"
        assert torch.allclose(grads32[j].double(), g64[j], atol=1e-5, rtol=1e-4), \
            f"float32 grad mismatch (input {j})"


def never_seen_case():
    """Hand-set bank: 1 head, K=3, C=3, N=6. Cluster 0 has a never-seen member (pl=-1),
    cluster 1 is empty, cluster 2 has members with mixed labels and scores."""
    a = torch.tensor([[0, 2, 0, 2, 2, 2]], dtype=torch.long)
    pl = torch.tensor([1, 0, -1, 2, 0, 0], dtype=torch.long)
    s = torch.tensor([[0.5, 0.75, 0.25, 1.25, 0.375, 0.5]], dtype=torch.float16)
    zprev = torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]], dtype=F32)
    zw, zp, sizes = cluster_labels(a, s, pl, zprev, 1, 3, 3)
    # cluster 2: labels 0,2,0,0 with scores 0.75,1.25,0.375,0.5 -> cnt (3,0,1), w (1.625,0,1.25)
    # weighted: (4.875, 0, 1.25)/6.125, plain: (0.75, 0, 0.25)
    assert torch.allclose(zw[0, 2], torch.tensor([4.875 / 6.125, 0.0, 1.25 / 6.125]))
    assert torch.equal(zw[0, 0], zprev[0, 0]) and torch.equal(zw[0, 1], torch.zeros(3))
    return {
        "H": 1, "K": 3, "C": 3, "N": 6,
        "bank": {"pl": tl(pl), "a": tl(a), "s": tl(s)},
        "z_prev": tl(zprev), "z_weighted": tl(zw), "z_plain": tl(zp), "cluster_sizes": tl(sizes),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/protocon_reference.json")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    init_centroids = normalize_rows(torch.randn(H, K, D, dtype=F32))
    st = State(init_centroids)

    perm0 = torch.randperm(N)
    perm1 = torch.randperm(N)
    schedule = []
    for s in range(EPOCH0_STEPS):
        schedule.append((s, 0, False, perm0[s * U:(s + 1) * U]))
    for j in range(EPOCH1_STEPS):
        schedule.append((EPOCH0_STEPS + j, 1, True, perm1[j * U:(j + 1) * U]))

    steps, epoch_end = [], None
    fd_step = EPOCH0_STEPS + 1
    for step, epoch, refine, idx in schedule:
        inp = {
            "indices": idx.clone(),
            "labels": torch.randint(0, C, (B,)),
            "p_x": LOGIT_SCALE * torch.randn(B, C, dtype=F32),
            "p_w": LOGIT_SCALE * torch.randn(U, C, dtype=F32),
            "p_s": LOGIT_SCALE * torch.randn(U, C, dtype=F32),
            "q_x": normalize_rows(torch.randn(B, D, dtype=F32)),
            "q_w": normalize_rows(torch.randn(U, D, dtype=F32)),
            "q_s": normalize_rows(torch.randn(U, D, dtype=F32)),
        }
        out, grads, consts = train_step(st, inp, refine)
        if step == fd_step:
            fd_check(inp, consts, grads)
        rec = {"step": step, "epoch": epoch, "refine": refine}
        rec.update({k: tl(v) for k, v in inp.items()})
        rec.update(out)
        steps.append(rec)
        if step == EPOCH0_STEPS - 1:
            assert bool((st.pl >= 0).all()), "epoch 0 must visit every sample"
            epoch_end = end_of_epoch(st)

    # sanity: mixed masks
    masks0 = [sum(r["mask"]) for r in steps if r["epoch"] == 0]
    masks1 = [m for r in steps if r["epoch"] == 1 for m in r["mask"]]
    assert any(0 < m < U for m in masks0), masks0
    assert 0 < sum(masks1) < len(masks1), masks1
    # refinement must matter: some mask differs from the pw-only mask, and some refined batch
    # has samples with different z (the duals dominate the scores at lambda = 20, u = 8, so
    # whole batches often land in one cluster per head)
    refined = [r for r in steps if r["refine"]]
    flips = sum(int(max(p) >= TAU) != int(m) for r in refined for p, m in zip(r["pw"], r["mask"]))
    assert flips > 0, "refinement changed no mask"
    assert any(len({tuple(z) for z in r["z"]}) > 1 for r in refined), "z constant in every batch"

    final = {
        "bank": st.bank(), "duals": tl(st.duals), "centroids": tl(st.centroids),
        "counters": tl(st.counters), "pbar": tl(st.pbar), "qbar": tl(st.qbar),
        "proto_sum": tl(st.proto_sum), "proto_count": tl(st.proto_count),
        "prototypes": tl(st.P), "z": tl(st.Z),
    }
    doc = {
        "config": {
            "C": C, "d": D, "N": N, "B": B, "u": U, "H": H, "K": K, "T": T, "tau": TAU,
            "lambda": LAMBDA, "gamma": GAMMA, "alpha": ALPHA, "debias": DEBIAS,
            "pbar_momentum": PBAR_M, "qbar_momentum": QBAR_M, "da_queue": DA_QUEUE,
            "seed": SEED, "logit_scale": LOGIT_SCALE, "fd_checked_step": fd_step,
        },
        "init_centroids": tl(init_centroids),
        "steps": steps,
        "epoch_end": epoch_end,
        "final": final,
        "never_seen": never_seen_case(),
    }
    with open(args.out, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    print(f"wrote {args.out}; masks epoch0 {masks0}, epoch1 {sum(masks1)}/{len(masks1)}")


if __name__ == "__main__":
    main()

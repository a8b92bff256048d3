#!/usr/bin/env python3
"""Fractured-vs-intact-twin learnability (docs/recipe.md, "Fractured and intact twins"): the tiny classifier of
bench/recipe/common.py on the pairs of bench/recipe/twins.ts.

  /usr/bin/python3 bench/recipe/twins.py --data out/twins/s128z2h64 --steps 1500 --max-min 20 \
      --out out/twins/res-s128z2h64.json
  --window=-200,1800: the image channels in a bone window; --init CKPT: the backbone from a segmentor checkpoint.
  --sanity: labels 1 = the INTACT crop + 300 HU in a random 5x5x5 cube inside the vertebra mask, 0 = intact.
  --dropout P (0.5), --pool max|avg (max), --stem-stride S (2; 1 = full-resolution stem), --no-stem-pool: the model;
  --arch plain: a dense 3x3x3 CNN instead, as a control.

Batches: 8 random pairs (16 crops, balanced, both members of a pair in the batch), independent random
W-flips and shifts of up to 4 px (H, W; zero fill) per crop. BCE with logits, AdamW lr 1e-3 wd 0.01
(no decay on biases, as train/trainer.ts), constant lr, gradient-norm clip 5. Evaluation every --every steps
(eval mode): ROC AUC on all validation crops and on the first --ntrain-eval training pairs, split by kind and
by gap (breaks), plus the paired accuracy P(score fractured > score twin).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C  # noqa: E402


def auc(y, s):
    """common.roc_auc, NaN where a split lacks one class (the tables print it)."""
    r = C.roc_auc(s, y)
    return float("nan") if r is None else r


def gap_bucket(r):
    if r["kind"] != "break":
        return None
    g = r["gap"]
    return "gap<1.5" if g < 1.5 else ("gap1.5-2.5" if g <= 2.5 else "gap>2.5")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--max-min", type=float, default=20)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--ntrain-eval", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--shift", type=int, default=4)
    ap.add_argument("--sanity", action="store_true")
    ap.add_argument("--sanity-hu", type=float, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--window", default="", help="lo,hi HU: the image channels as clip(HU, lo, hi) scaled to [-1, 1]")
    ap.add_argument("--init", default="", help="a segmentor checkpoint (safetensors) whose backbone.* start the classifier")
    ap.add_argument("--dropout", type=float, default=0.5, help="dropout before the Linear head")
    ap.add_argument("--pool", choices=("max", "avg"), default="max", help="global pooling of the last stage")
    ap.add_argument("--stem-stride", type=int, default=2, help="spatial (H, W) stride of the stem conv; 1 keeps full resolution")
    ap.add_argument("--no-stem-pool", action="store_true", help="drop the stem's MaxPool3d((1,3,3),(1,2,2))")
    ap.add_argument("--arch", choices=("csn", "plain"), default="csn",
                    help="plain: a control of four dense 3x3x3 conv + BN + ReLU layers (16, 32, 64, 64) with max "
                         "pools, global max pool, Linear (no dropout)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    meta = json.load(open(os.path.join(a.data, "index.json")))
    rows = meta["rows"]
    D, H = meta["D"], meta["hw"]
    N = len(rows)
    img = np.fromfile(os.path.join(a.data, "img.bin"), dtype=np.float32).reshape(N, D, H, H)
    if a.window:
        lo, hi = (float(v) for v in a.window.split(","))
        for p in range(N):
            hu = img[p] * rows[p]["std"] + rows[p]["mean"]
            img[p] = (np.clip(hu, lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)
        print(f"bone window [{lo}, {hi}] HU", flush=True)
    msk = np.fromfile(os.path.join(a.data, "mask.bin"), dtype=np.uint8).reshape(N, D, H, H)
    # pairs: rows 2k (fractured, label 1) and 2k+1 (twin, label 0)
    assert all(rows[2 * k]["label"] == 1 and rows[2 * k + 1]["label"] == 0 for k in range(N // 2))
    if a.sanity:
        # both members become the intact twin; the positive gets +300 HU in a 5x5x5 cube inside the mask
        for k in range(N // 2):
            p, q = 2 * k, 2 * k + 1
            img[p] = img[q]
            zz, yy, xx = np.nonzero(msk[q])
            c = rng.integers(len(zz))
            z, y, x = zz[c], yy[c], xx[c]
            img[p, max(0, z - 2):z + 3, max(0, y - 2):y + 3, max(0, x - 2):x + 3] += a.sanity_hu / rows[p]["std"]
    split = np.array([r["split"] for r in rows])
    tr_pairs = np.array([k for k in range(N // 2) if rows[2 * k]["split"] == "train"])
    va_pairs = np.array([k for k in range(N // 2) if rows[2 * k]["split"] == "val"])
    print(f"{a.data}: {N // 2} pairs, train {len(tr_pairs)}, val {len(va_pairs)}; crops [{D}, {H}, {H}]"
          f"{' SANITY' if a.sanity else ''}", flush=True)

    if a.arch == "plain":
        model = C.PlainClassifier(classes=1, dropout=0.0)
        print(f"model: plain 3x3x3 CNN; {C.n_params(model)} parameters", flush=True)
    else:
        model = C.Classifier(encoder="r26ir", base=8, classes=1, pool=a.pool, dropout=a.dropout)
        # stem changes on the built model (tests/csn_ref.py CSN: conv1 = ConvModule(conv, bn), pool = MaxPool3d)
        model.backbone.conv1.conv.stride = (1, a.stem_stride, a.stem_stride)
        if a.no_stem_pool:
            model.backbone.pool = torch.nn.Identity()
        print(f"model: dropout {a.dropout}, pool {a.pool}, stem stride {a.stem_stride}, stem pool "
              f"{'off' if a.no_stem_pool else 'on'}; {C.n_params(model)} parameters", flush=True)
    if a.init:
        import json as _j, struct as _s
        with open(a.init, "rb") as fh:
            n = _s.unpack("<Q", fh.read(8))[0]
            head = _j.loads(fh.read(n))
            blob = fh.read()
        sd = model.state_dict()
        loaded = 0
        for k, v in head.items():
            if k in sd and k.startswith("backbone."):
                o0, o1 = v["data_offsets"]
                dt = {"F32": np.float32, "I64": np.int64, "I32": np.int32}[v["dtype"]]
                t = torch.from_numpy(np.frombuffer(blob[o0:o1], dtype=dt).reshape(v["shape"]).copy())
                if t.shape == sd[k].shape:
                    sd[k] = t.to(sd[k].dtype)
                    loaded += 1
        model.load_state_dict(sd)
        print(f"init: {loaded} backbone tensors from {a.init}", flush=True)
    opt = C.seed_adamw(model, a.lr, a.wd)
    params = [p for p in model.parameters()]

    def tensor(idx, aug):
        x = np.stack([img[idx], img[idx], msk[idx].astype(np.float32)], 1)  # [B, 3, D, H, W]
        if aug:
            for b in range(len(idx)):
                if rng.random() < 0.5:
                    x[b] = x[b, :, :, :, ::-1]
                dy, dx = rng.integers(-a.shift, a.shift + 1, 2)
                x[b] = np.roll(x[b], (dy, dx), (2, 3))
                if dy > 0:
                    x[b, :, :, :dy] = 0
                elif dy < 0:
                    x[b, :, :, dy:] = 0
                if dx > 0:
                    x[b, :, :, :, :dx] = 0
                elif dx < 0:
                    x[b, :, :, :, dx:] = 0
        return torch.from_numpy(np.ascontiguousarray(x))

    def scores(pairs):
        idx = np.concatenate([[2 * k, 2 * k + 1] for k in pairs])
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(idx), 32):
                out.append(model(tensor(idx[i:i + 32], False))[:, 0].numpy())
        model.train()
        return idx, np.concatenate(out)

    def evaluate(pairs):
        idx, s = scores(pairs)
        y = np.array([rows[i]["label"] for i in idx])
        kind = np.array([rows[i]["kind"] for i in idx])
        gb = np.array([gap_bucket(rows[i]) or "-" for i in idx])
        res = {"all": auc(y, s), "n": int(len(pairs))}
        for k in ("break", "compression"):
            m = kind == k
            res[k] = auc(y[m], s[m])
            res["n_" + k] = int(m.sum() // 2)
        for g in ("gap<1.5", "gap1.5-2.5", "gap>2.5"):
            m = gb == g
            res[g] = auc(y[m], s[m])
            res["n_" + g] = int(m.sum() // 2)
        res["paired_acc"] = float(np.mean(s[0::2] > s[1::2]))
        res["mean_logit"] = float(s.mean())
        return res

    def fmt(r):
        f = lambda v: "  nan" if v != v else f"{v:.3f}"  # noqa: E731
        return (f"all {f(r['all'])} | break {f(r['break'])} (n{r['n_break']}) comp {f(r['compression'])} "
                f"(n{r['n_compression']}) | <1.5 {f(r['gap<1.5'])} (n{r['n_gap<1.5']}) 1.5-2.5 "
                f"{f(r['gap1.5-2.5'])} (n{r['n_gap1.5-2.5']}) >2.5 {f(r['gap>2.5'])} (n{r['n_gap>2.5']}) | "
                f"paired {r['paired_acc']:.3f}")

    tr_eval = tr_pairs[: a.ntrain_eval]
    log = {"config": vars(a), "pairs": {"train": int(len(tr_pairs)), "val": int(len(va_pairs))},
           "evals": [], "loss": []}
    t0 = time.time()
    losses = []
    step = 0
    t_train = 0.0
    while step < a.steps:
        ts = time.time()
        ks = rng.choice(tr_pairs, a.pairs, replace=False)
        idx = np.concatenate([[2 * k, 2 * k + 1] for k in ks])
        x = tensor(idx, True)
        y = torch.tensor([[float(rows[i]["label"])] for i in idx])
        opt.zero_grad()
        lv, gn = C.update(opt, params, F.binary_cross_entropy_with_logits(model(x), y), 5.0, step)
        losses.append(lv)
        log["loss"].append(lv)
        step += 1
        t_train += time.time() - ts
        over = (time.time() - t0) / 60 > a.max_min
        if step % 50 == 0:
            print(f"step {step} loss(50) {np.mean(losses[-50:]):.4f} {t_train / step:.2f} s/step", flush=True)
        if step % a.every == 0 or step == a.steps or over:
            rv, rt = evaluate(va_pairs), evaluate(tr_eval)
            log["evals"].append({"step": step, "val": rv, "train": rt, "s_per_step": t_train / step,
                                 "loss": float(np.mean(losses[-50:]))})
            print(f"[{step}] VAL   {fmt(rv)}", flush=True)
            print(f"[{step}] TRAIN {fmt(rt)}", flush=True)
            if a.out:
                json.dump(log, open(a.out, "w"), indent=1)
        if over:
            print(f"time limit {a.max_min} min reached at step {step}", flush=True)
            break
    print(f"done: {step} steps, {t_train / step:.2f} s/step, {(time.time() - t0) / 60:.1f} min", flush=True)
    log["done"] = {"steps": step, "s_per_step": t_train / step, "minutes": (time.time() - t0) / 60,
                   "params": C.n_params(model)}
    if a.out:
        json.dump(log, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()

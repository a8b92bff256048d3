"""Shared pieces of the PyTorch recipe search (bench/recipe/seg.py, cls.py): the preprocessing cache
(data/cache.ts layout), the folds files, the models of tests/csn_ref.py with our TS models' init, the seed's
AdamW groups and per-step cosine schedule, and a small JSON/progress helper. Written from this repo's
TypeScript sources; no third-party code.
"""
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
import csn_ref  # noqa: E402  (the reference architecture, same parameter names as our TS models)

# ---------------------------------------------------------------------------------------------- cache


def read_header(cache, uid):
    with open(os.path.join(cache, uid, "header.json")) as f:
        return json.load(f)


def list_cached(cache):
    """uids with a complete study folder (header.json present), sorted like data/cache.ts listCached."""
    out = []
    for name in os.listdir(cache):
        d = os.path.join(cache, name)
        if os.path.isdir(d) and ".partial" not in name and os.path.exists(os.path.join(d, "header.json")):
            out.append(name)
    return sorted(out)


def cube(cache, uid, name, header=None):
    """A cube as a read-only memmap [Z, H, W] (image: header dtype; mask: uint8)."""
    h = header or read_header(cache, uid)
    dims = h["cubes"].get(name)
    if not dims:
        raise FileNotFoundError(f"{cache}/{uid}: no {name} cube")
    dt = np.uint8 if name == "mask_256" else (np.int16 if h["dtype"] == "int16" else np.uint16)
    return np.memmap(os.path.join(cache, uid, f"{name}.raw"), dtype=np.dtype(dt).newbyteorder("<"), mode="r",
                     shape=tuple(dims))


def read_folds(path):
    """StudyInstanceUID (or cube_id), fold -> dict; None when the file is absent."""
    if not os.path.exists(path):
        return None
    out = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            out[(r.get("StudyInstanceUID") or r.get("cube_id")).strip()] = int(r["fold"])
    return out


TARGETS = ["patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]


def metric_weights(y):
    """The competition's weights of one study's 8 targets (infer/metric.ts): 2 for a positive vertebra, 1 for a
    negative one, 14 / 7 for a positive / negative patient_overall."""
    w = np.where(y > 0, 2.0, 1.0)
    w[0] = 14.0 if y[0] else 7.0
    return w


def study_truth(labels):
    """A train.csv row as the 8 targets the metric scores, patient_overall from the vertebrae."""
    y = np.array(labels, np.float64)
    y[0] = float(y[1:].any())
    return y


def study_losses(preds, truths):
    """Each study's weighted log loss (the competition score is their mean)."""
    out = []
    for p, y in zip(preds, truths):
        q = np.clip(np.asarray(p, np.float64), 1e-15, 1 - 1e-15)
        w = metric_weights(y)
        out.append(float((w * -(y * np.log(q) + (1 - y) * np.log(1 - q))).sum() / w.sum()))
    return np.array(out)


def read_train_csv(path):
    out = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            out[r["StudyInstanceUID"].strip()] = [int(float(r[t])) for t in TARGETS]
    return out


def make_folds(rows, k, seed=0):
    """data/rsna.ts makeFolds: per patient_overall class, a Fisher-Yates shuffle by an LCG, then i % k.
    rows: list of (uid, labels) in the caller's order."""
    s = seed & 0xFFFFFFFF
    out = {}

    def rnd():
        nonlocal s
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        return s / 2 ** 32

    for cls in (0, 1):
        g = [u for u, l in rows if l[0] == cls]
        for i in range(len(g) - 1, 0, -1):
            j = int(math.floor(rnd() * (i + 1)))
            g[i], g[j] = g[j], g[i]
        for i, u in enumerate(g):
            out[u] = i % k
    return out


# ---------------------------------------------------------------------------------------------- models


def parse_encoder(name):
    import re
    m = re.fullmatch(r"r(26|50|101|152)(ir|ip)", name)
    if not m:
        raise ValueError(f"unknown encoder {name!r} (r26ir, r50ir, r152ip, ...)")
    return int(m.group(1)), m.group(2)


def _kaiming_decoder(module):
    """Our TS Conv3d default (nn/layers.ts): weights N(0, 2 / fan_in), zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class UNet(nn.Module):
    """models/unet.ts CSNUNet with configurable decoder filters and last channels (csn_ref's UNet fixes
    them at the seed's [40, 64, 128, 256] / 32). Backbone and `final`: PyTorch's default init; decoder:
    Kaiming normal, as models/unet.ts and nn/layers.ts do."""

    def __init__(self, encoder="r26ir", base=8, filters=(8, 16, 16, 32), last=8, classes=8):
        super().__init__()
        depth, kind = parse_encoder(encoder)
        self.backbone = csn_ref.CSN(depth, kind, base)
        self.decoder = csn_ref.Decoder([base, 4 * base, 8 * base, 16 * base], 32 * base, tuple(filters), last)
        _kaiming_decoder(self.decoder)
        self.final = nn.Conv3d(last, classes, 1)

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1, 1)
        return self.final(self.decoder(self.backbone(x)))


class Classifier(nn.Module):
    """models/classifier.ts CSNClassifier: backbone -> global max/avg pool -> dropout -> Linear.

    dense=(w, ...) (a recipe experiment, not in the TS model; default () is the TS model): dense 3x3x3
    conv + BN + ReLU layers of widths w, ... between the stem's conv and its max pool (the stem's 32 x 32
    in-plane maps for a 64 px crop), so that the first channel-separated stage gets features from full 3x3x3
    filters over many channels instead of the 8-channel stem alone; layer1's first block then takes the last
    width as its input."""

    def __init__(self, encoder="r26ir", base=8, classes=8, pool="max", dropout=0.5, dense=(), where=False):
        super().__init__()
        depth, kind = parse_encoder(encoder)
        self.backbone = csn_ref.CSN(depth, kind, base)
        self.dense = nn.Sequential(*[csn_ref.ConvModule(i, o, 3, 1, 1)
                                     for i, o in zip((base,) + tuple(dense), dense)])
        if dense:
            self.backbone.layer1[0] = csn_ref.Bottleneck(dense[-1], base, 1, 1, kind, True)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.final = nn.Linear(32 * base, classes)
        # cls.py --fmap: a 1x1x1 conv on layer3's map (4 x 4 x 4 for a 16 x 64 x 64 crop) predicting the fractures
        self.where = nn.Conv3d(16 * base, 1, 1) if where else None

    def forward(self, x, with_map=False):
        b = self.backbone  # csn_ref.CSN.forward spelt out, with self.dense after the stem's conv
        f3 = b.layer3(b.layer2(b.layer1(b.pool(self.dense(b.conv1(x))))))
        f = b.layer4(f3)
        f = torch.amax(f, (2, 3, 4)) if self.pool == "max" else f.mean((2, 3, 4))
        out = self.final(self.dropout(f))
        return (out, self.where(f3)[:, 0]) if with_map else out


class PlainClassifier(nn.Module):
    """A dense 3x3x3 CNN control for the classifier (a recipe experiment, no TS counterpart; cls.py and
    twins.py --arch plain): conv3x3x3 + BN + ReLU blocks of widths 16, 32, 64, 64, max pools
    (1, 2, 2), 2, 2 after the first three (16 x 64 x 64 -> 4 x 8 x 8), global max/avg pool, dropout,
    Linear(-> classes). ~182 k parameters against the r26ir width 8 classifier's ~135 k."""

    def __init__(self, classes=8, widths=(16, 32, 64, 64), pool="max", dropout=0.5, cin=3, where=False):
        super().__init__()
        pools = [(1, 2, 2), 2, 2] + [None] * (len(widths) - 3)
        layers = []
        for i, (o, pk) in enumerate(zip(widths, pools)):
            layers += [nn.Conv3d(cin if i == 0 else widths[i - 1], o, 3, padding=1, bias=False),
                       nn.BatchNorm3d(o), nn.ReLU()] + ([nn.MaxPool3d(pk)] if pk else [])
        self.features = nn.Sequential(*layers)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.final = nn.Linear(widths[-1], classes)
        # cls.py --fmap: a 1x1x1 conv on the last feature map predicting where the fractures are
        self.where = nn.Conv3d(widths[-1], 1, 1) if where else None

    def forward(self, x, with_map=False):
        f = self.features(x)
        g = torch.amax(f, (2, 3, 4)) if self.pool == "max" else f.mean((2, 3, 4))
        out = self.final(self.dropout(g))
        return (out, self.where(f)[:, 0]) if with_map else out


def roc_auc(scores, labels):
    """ROC AUC (Mann-Whitney, ties counted half) of scores against 0/1 labels; None without both classes."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rp = ranks[: len(pos)].sum()
    return float((rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- optimisation


def seed_adamw(model, lr, wd):
    """train/trainer.ts seedAdamW: no weight decay for parameters whose name contains "bias"."""
    named = list(model.named_parameters())
    return torch.optim.AdamW([
        {"params": [p for n, p in named if "bias" not in n]},
        {"params": [p for n, p in named if "bias" in n], "weight_decay": 0.0},
    ], lr=lr, weight_decay=wd, eps=1e-8, betas=(0.9, 0.999))


def cosine_lr(step, lr, steps, warmup=0, eta_min=1e-5):
    """optim/schedule.ts cosineSchedule with T_max = steps - warmup (reaches eta_min at the last step)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = step - warmup
    T = max(1, steps - warmup)
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / T)) / 2


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


def update(opt, params, loss, clip, step):
    """Backward, global-norm clipping (train/trainer.ts), AdamW step; returns (loss value, gradient norm) and
    stops the run on a non-finite loss. The caller zeroed the gradients before its forward."""
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else torch.zeros(())
    opt.step()
    lv = float(loss)
    if not math.isfinite(lv):
        sys.exit(f"loss is {lv} at step {step + 1}")
    return lv, float(gn)


# ---------------------------------------------------------------------------------------------- misc


def fmt_time(s):
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Clock:
    def __init__(self):
        self.t0 = time.time()

    def __call__(self):
        return time.time() - self.t0


def write_json(path, obj):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def parse_ints(s, n=None):
    v = [int(x) for x in str(s).split(",") if x != ""]
    if n is not None and len(v) != n:
        raise ValueError(f"expected {n} comma-separated integers, got {s!r}")
    return v

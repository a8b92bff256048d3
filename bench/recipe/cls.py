#!/usr/bin/env python3
"""Recipe search for the classifier stage in PyTorch (CPU): the CSN classifier of train/cls.ts trained on
3-channel vertebra crops cut with the TRUE masks (mask_256) instead of predicted ones, validated with the
competition metric beside the best constant prediction.

  /usr/bin/python3 bench/recipe/cls.py --cache out/cache/phantoms --labels out/phantoms/train.csv \
      --steps 300 --lr 1e-3 --warmup 30 --out out/recipe/cls-lr1e-3.json

What it reproduces (TS source in brackets):
* studies: cached studies with mask_256, image_full and a train.csv row; the "prediction" is mask_256[::2]
  with labels > 7 set to 0, and its compute_meta (boxes, voxel counts) [infer/meta.ts]. Folds:
  <cache>/folds.csv if present, else data/rsna.ts makeFolds(k = --folds, seed 0) over these studies
  (stratified by patient_overall; never written to the cache). Validation fold --fold. --zstep 1 keeps every
  slice of image_full and mask_256 instead of every other one (default 2, as the pipeline does).
* training crops [infer/crops.ts drawClsTrainSpec, buildClsTrainSample; infer/crops/rules.ts]: the weighted
  sampler's 50/50 positive/negative studies (--pos-share); pickVertebra (area > --min-area; fractured ones with
  p 0.7, --p-frac); the xy box with a 16 px margin on the 256 grid mapped onto image_full's grid; trainZRange
  (D = --crop-d); image_full [::2] (--zstep) and the mask resized nearest to the full-resolution crop;
  augmentation with OpenCV as albumentations does it (LongestMaxSize S, PadIfNeeded S x S centred,
  ShiftScaleRotate 0.05/0.1/15 p 0.5, HorizontalFlip, VerticalFlip, RandomRotate90 p 0.5; --augment 0 keeps
  the first two); the visibility rule on the augmented crop mask (--vis seed, as coded: the crop's voxels at
  S x S against the study's meta-grid voxels, so at a small S it drops many fractured labels; meta rescales
  the crop's count to the meta grid first; off keeps every fractured label); a random D-slice window;
  channels (z-scored image with header mean/std, the same, the mask as raw 0..7); zero padding to D.
* validation [infer/crops.ts clsValCrops, buildClsValCrop; infer/metric.ts]: per study one crop per vertebra
  C1..C7 (zeros when absent; centred when shorter than D; first and last D slices when longer), per-output
  max of the sigmoids over the crops, clipped to [0.01, 0.99], the competition weighted log loss (lower is
  better). Printed beside the score of the constant prediction = training-fold positive rates, and the
  crop-level ROC AUC of each crop's own vertebra output (a threshold-free sign of learning; also with each
  output's mean logit over the crops taken off, so level priors do not count). --train-auc N adds
  the same crop AUC on the first N training studies (a sign of fitting, not of learning). Each evaluation in
  --out keeps the validation studies' predictions (`studies`), which bench/recipe/noise.py bootstraps.
* model [models/classifier.ts]: tests/csn_ref.py's CSN, global max pool, dropout --dropout, Linear(-> 8).
  --arch (experiments, default csn = the TS model): plain, a dense 3x3x3 CNN of about the same size
  (common.PlainClassifier); dense-stage, the CSN with dense 3x3x3 conv + BN + ReLU layers of --dense-widths
  between the stem's conv and its max pool (common.Classifier dense=).
* loss: mean BCE-with-logits over batch x 8; AdamW (wd on non-bias parameters), warmup + per-step cosine to
  1e-5, gradient-norm clip 5 [train/cls.ts, train/trainer.ts].

--out writes JSON: config, per-step loss, per-eval scores, seconds per step.
"""
import argparse
import os
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

GRID = 256


# ---------------------------------------------------------------------------------------------- studies


class Study:
    def __init__(self, cache, uid, labels, zstep=2, fmap=None):
        h = C.read_header(cache, uid)
        self.uid = uid
        self.labels = list(labels)  # CSV [overall, C1..C7]
        self.mean, self.std = float(h["mean"]), float(h["std"])
        self.full = np.asarray(C.cube(cache, uid, "image_full", h)[::zstep], dtype=np.float32)  # [Z2, H, W]
        m = np.array(C.cube(cache, uid, "mask_256", h)[::zstep])
        m[m > 7] = 0
        self.mask = m  # [Z2, 256, 256]
        self.z2 = m.shape[0]
        # --fmap: the fracture map on image_full's grid (None: unknown; a negative study's is known empty)
        self.fmap = None if fmap is None else np.ascontiguousarray(fmap[::zstep])
        self.fmap_known = fmap is not None or labels[0] != 1
        self.sums = [0] * 8
        self.boxes = {}
        for c in range(1, 8):
            z, y, x = np.nonzero(m == c)
            if z.size:
                self.sums[c] = int(z.size)
                self.boxes[c] = ((int(z.min()), int(y.min()), int(x.min()), int(z.max()) + 1, int(y.max()) + 1,
                                  int(x.max()) + 1), int(z.size))


def crop_xy(box, full_hw, margin=16, grid=GRID):
    _, y0, x0, _, y1, x1 = box
    H, W = full_hw
    y = (max(y0 - margin, 0), min(y1 + margin, grid))
    x = (max(x0 - margin, 0), min(x1 + margin, grid))

    def mp(r, n):
        return (r[0] * n) // grid, min(n, -((-r[1] * n) // grid))

    return y, x, mp(y, H), mp(x, W)


def boxes_of(fmap):
    """A fracture map [Z, H, W] (non-zero at the fracture) -> 1 inside each slice's bounding boxes of its fracture
    regions (8-connected after a 5x5 dilation, so one break's pieces make one box): RSNA's
    train_bounding_boxes.csv form of it."""
    out = np.zeros_like(fmap)
    kernel = np.ones((5, 5), np.uint8)
    for z in np.nonzero(fmap.reshape(fmap.shape[0], -1).any(1))[0]:
        grown = cv2.dilate((fmap[z] > 0).astype(np.uint8), kernel)
        n, lab = cv2.connectedComponents(grown, connectivity=8)
        for k in range(1, n):
            y, x = np.nonzero((lab == k) & (fmap[z] > 0))
            if y.size:
                out[z, y.min():y.max() + 1, x.min():x.max() + 1] = 1
    return out


def pick_vertebra(st, rnd, min_area, p_frac=0.7):
    cand = [c for c in range(1, 8) if c in st.boxes and st.boxes[c][1] > min_area]
    if not cand:
        return None
    frac = [c for c in cand if st.labels[c] == 1]
    non = [c for c in cand if st.labels[c] != 1]
    lst = frac if (rnd.random() < p_frac and frac) else non
    if not lst:
        lst = frac
    return lst[min(len(lst) - 1, int(rnd.random() * len(lst)))]


def train_z_range(z0, z1, D, rnd):
    if z1 - z0 >= D:
        return z0, z1
    lo = max(z1 - D, 0)
    n = z0 - lo + 1
    s = lo + min(n - 1, int(rnd.random() * n))
    return s, s + D


def val_z_ranges(z0, z1, D):
    span = z1 - z0
    if span < D:
        s = max(0, z0 - (D - span) // 2)
        return [(s, s + D)]
    if span == D:
        return [(z0, z1)]
    return [(z0, z0 + D), (z1 - D, z1)]


def visible_labels(labels, counts, sums):
    out = np.zeros(8, np.float32)
    for c in range(1, 8):
        if labels[c] == 1:
            out[c] = 0.0 if counts[c] / (sums[c] + 100) < 0.3 else 1.0
    out[0] = float(out[1:].any())
    return out


# ---------------------------------------------------------------------------------------------- augmentation


def round_half_even(v):
    return int(np.round(v))


def draw_plan(rnd, h, w, S, train):
    """Parameters of LongestMaxSize S -> PadIfNeeded S -> [SSR, HFlip, VFlip, Rot90]."""
    sc = S / max(h, w)
    nh, nw = round_half_even(h * sc), round_half_even(w * sc)
    top, left = max(0, (S - nh) // 2), max(0, (S - nw) // 2)
    p = {"size": (nh, nw), "pad": (top, max(0, S - nh) - top, left, max(0, S - nw) - left)}
    if train:
        if rnd.random() < 0.5:
            p["ssr"] = (rnd.uniform(-15, 15), rnd.uniform(0.9, 1.1), rnd.uniform(-0.05, 0.05), rnd.uniform(-0.05, 0.05))
        p["hflip"] = rnd.random() < 0.5
        p["vflip"] = rnd.random() < 0.5
        p["rot90"] = int(rnd.integers(0, 4)) if rnd.random() < 0.5 else 0
    return p


def _plan_slice(p, a, interp):
    nh, nw = p["size"]
    t, b, l, r = p["pad"]
    a = cv2.resize(a, (nw, nh), interpolation=interp)
    a = cv2.copyMakeBorder(a, t, b, l, r, cv2.BORDER_CONSTANT, value=0)
    if "ssr" in p:
        ang, s, dx, dy = p["ssr"]
        H, W = a.shape
        M = cv2.getRotationMatrix2D((W / 2 - 0.5, H / 2 - 0.5), ang, s)
        M[0, 2] += dx * W
        M[1, 2] += dy * H
        a = cv2.warpAffine(a, M, (W, H), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if p.get("hflip"):
        a = a[:, ::-1]
    if p.get("vflip"):
        a = a[::-1]
    if p.get("rot90"):
        a = np.rot90(a, p["rot90"])
    return np.ascontiguousarray(a)


def apply_plan(p, img, msk, *nearest):
    """img [n, h, w] float32 raw, msk (and any further `nearest`) [n, h, w] uint8 -> [n, S, S] each (constant
    border 0; bilinear for img, nearest for the masks)."""
    out = [np.stack([_plan_slice(p, a, cv2.INTER_LINEAR) for a in img])]
    for v in (msk, *nearest):
        out.append(np.stack([_plan_slice(p, a, cv2.INTER_NEAREST) for a in v]))
    return tuple(out)


def nearest_up(mask, fh, fw):
    n, mh, mw = mask.shape
    iy = np.minimum(mh - 1, (np.arange(fh) * mh) // fh)
    ix = np.minimum(mw - 1, (np.arange(fw) * mw) // fw)
    return mask[:, iy][:, :, ix]


def assemble(img, msk, w, mean, std, D, S):
    out = np.zeros((3, D, S, S), np.float32)
    v = (img[:w] - mean) / std
    out[0, :w] = v
    out[1, :w] = v
    out[2, :w] = msk[:w]
    return out


def cut(st, box, z, D, S, rnd, train, window=None, fmap=False):
    """The crop of box (z range on the [::2] grid) -> (input [3, D, S, S], augmented mask of every slice[,
    fracture map [D, S, S] (0/1) with fmap])."""
    y, x, yf, xf = crop_xy(box, st.full.shape[1:])
    z0, z1 = min(z[0], st.z2), min(z[1], st.z2)
    fh, fw = yf[1] - yf[0], xf[1] - xf[0]
    m = nearest_up(st.mask[z0:z1, y[0]:y[1], x[0]:x[1]], fh, fw)
    im = st.full[z0:z1, yf[0]:yf[1], xf[0]:xf[1]]
    p = draw_plan(rnd, fh, fw, S, train)
    n = z1 - z0
    a, b = (0, n) if window is None else window(n)
    if not fmap:
        ai, am = apply_plan(p, im, m)  # every slice: the visibility rule counts the whole crop
        return assemble(ai[a:b], am[a:b], b - a, st.mean, st.std, D, S), am
    fm = np.zeros(im.shape, np.uint8) if st.fmap is None else (st.fmap[z0:z1, yf[0]:yf[1], xf[0]:xf[1]] > 0)
    ai, am, af = apply_plan(p, im, m, fm.astype(np.uint8))
    tf = np.zeros((D, S, S), np.float32)
    tf[:b - a] = af[a:b]
    return assemble(ai[a:b], am[a:b], b - a, st.mean, st.std, D, S), am, tf


def train_sample(st, D, S, rnd, min_area, augment, p_frac=0.7, vis="seed", fmap=False):
    v = pick_vertebra(st, rnd, min_area, p_frac)
    if v is None:
        empty = np.zeros((3, D, S, S), np.float32), visible_labels(st.labels, [0] * 8, st.sums), None
        return (*empty, np.zeros((D, S, S), np.float32)) if fmap else empty
    box = st.boxes[v][0]
    z = train_z_range(box[0], box[3], D, rnd)

    def window(n):
        if n > D:
            a = min(n - D, int(rnd.random() * (n - D + 1)))
            return a, a + D
        return 0, n

    x, am, *tf = cut(st, box, z, D, S, rnd, augment, window, fmap)
    counts = np.bincount(am.ravel(), minlength=8)[:8].astype(np.float64)
    if vis == "meta":  # counts in meta-grid (256) voxels, as sums are: undo LongestMaxSize's area scale
        y, xx, _, _ = crop_xy(box, st.full.shape[1:])
        counts *= (max(y[1] - y[0], xx[1] - xx[0]) / S) ** 2
    elif vis == "off":
        counts[:] = np.inf
    return (x, visible_labels(st.labels, counts, st.sums), v, *tf)


def val_item(st, D, S, rnd):
    crops, verts = [], []
    for c in range(1, 8):
        if c not in st.boxes:
            crops.append(np.zeros((3, D, S, S), np.float32))
            verts.append(c)
            continue
        box = st.boxes[c][0]
        for z in val_z_ranges(box[0], box[3], D):
            crops.append(cut(st, box, z, D, S, rnd, False)[0])
            verts.append(c)
    return np.stack(crops), verts, C.study_truth(st.labels).astype(np.float32)


# ---------------------------------------------------------------------------------------------- metric


def aggregate(logits):
    p = 1 / (1 + np.exp(-logits.max(0)))
    return np.clip(p, 0.01, 0.99)


def competition_score(preds, truths):
    tot, tn, td = 0.0, np.zeros(8), np.zeros(8)
    for p, y in zip(preds, truths):
        q = np.clip(p, 1e-15, 1 - 1e-15)
        bce = -(y * np.log(q) + (1 - y) * np.log(1 - q))
        w = C.metric_weights(y)
        tot += (w * bce).sum() / w.sum()
        tn += w * bce
        td += w
    return tot / len(preds), dict(zip(C.TARGETS, (tn / td).tolist()))


@torch.no_grad()
def validate(model, items, const):
    model.eval()
    preds, truths, cs, cl, cv, studies, ws, wv = [], [], [], [], [], [], [], []
    has_map = getattr(model, "where", None) is not None
    for x, verts, truth, st in items:
        if has_map:
            lg, wm = model(torch.from_numpy(x), with_map=True)
            # the map's highest cell over the crop, and over the cells that hold the crop's own vertebra
            own = torch.tensor([float(v) for v in verts])[:, None, None, None]
            inside = F.adaptive_max_pool3d((torch.from_numpy(x[:, 2]) == own).float()[:, None], wm.shape[1:])[:, 0]
            wo = torch.where(inside > 0, wm, torch.full_like(wm, -1e9)).amax((1, 2, 3)).numpy()
            lg, wm = lg.numpy(), wm.amax((1, 2, 3)).numpy()
        else:
            lg = model(torch.from_numpy(x)).numpy()
        preds.append(aggregate(lg))
        truths.append(truth)
        studies.append({"uid": st.uid, "truth": [float(t) for t in truth], "pred": preds[-1].tolist()})
        for i, v in enumerate(verts):
            if v in st.boxes:
                cs.append(float(lg[i, v]))
                if has_map:
                    ws.append(float(wm[i]))
                    wv.append(float(wo[i]))
                cl.append(st.labels[v])
                cv.append(v)
    model.train()
    score, per = competition_score(preds, truths)
    cscore, _ = competition_score([const] * len(truths), truths)
    # The same with each vertebra output's mean logit over the crops taken off: the level priors (C2, C7 break
    # most often) out of the pooled AUC.
    mu = {v: np.mean([s for s, w in zip(cs, cv) if w == v]) for v in set(cv)}
    return {"score": score, "const_score": cscore, "crop_auc": C.roc_auc(cs, cl),
            "crop_auc_level": C.roc_auc([s - mu[v] for s, v in zip(cs, cv)], cl),
            **({"map_auc": C.roc_auc(ws, cl), "map_auc_own": C.roc_auc(wv, cl)} if has_map else {}),
            **{f"loss_{k}": v for k, v in per.items()}, "studies": studies}


# ---------------------------------------------------------------------------------------------- main


def default_labels(cache):
    p = os.path.join(cache, "train.csv")
    if os.path.exists(p):
        return p
    c = os.path.normpath(cache)
    return os.path.join(os.path.dirname(os.path.dirname(c)), os.path.basename(c), "train.csv")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cache", default="out/cache/phantoms")
    ap.add_argument("--labels", default="", help="train.csv (default: <cache>/train.csv, else out/<name>/train.csv "
                    "for a cache out/cache/<name>)")
    ap.add_argument("--crop-d", type=int, default=16)
    ap.add_argument("--crop", type=int, default=64, help="in-plane crop size S")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eta-min", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--arch", default="csn", choices=["csn", "plain", "dense-stage"], help="csn: the TS "
                    "classifier; plain: dense 3x3x3 CNN (widths 16,32,64,64; --encoder/--width unused); dense-stage: "
                    "the CSN with dense 3x3x3 layers of --dense-widths after the stem's conv")
    ap.add_argument("--plain-widths", default="16,32,64,64", help="--arch plain: the four blocks' widths")
    ap.add_argument("--train-studies", type=int, default=0, help="use only the first N studies of the training "
                    "fold (0: all), for a smaller dataset's figures")
    ap.add_argument("--dense-widths", default="16,16", help="--arch dense-stage: widths of the dense layers")
    ap.add_argument("--encoder", default="r26ir")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--pool", default="max")
    ap.add_argument("--min-area", type=int, default=512)
    ap.add_argument("--augment", type=int, default=1)
    ap.add_argument("--zstep", type=int, default=2, help="slice stride of image_full/mask_256 (1: every slice)")
    ap.add_argument("--p-frac", type=float, default=0.7, help="pickVertebra: chance of a fractured vertebra in a "
                    "positive study")
    ap.add_argument("--vis", default="seed", choices=["seed", "meta", "off"], help="visibility rule: seed "
                    "(crop-mask voxels at S x S against the study's meta-grid voxels), meta (crop voxels rescaled "
                    "to the meta grid first), off (every fractured label kept)")
    ap.add_argument("--pos-share", type=float, default=0.5, help="share of positive studies in the sampler")
    ap.add_argument("--train-auc", type=int, default=0, help="also report the crop AUC on this many training "
                    "studies (validation-style crops) at each eval: a sign of fitting")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=100, help="0: only at the end")
    ap.add_argument("--max-seconds", type=float, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--fmap", default="", help="fracture maps (bench/recipe/fracmaps.ts): train with a "
                    "second loss on where the fractures are (negative studies: known empty)")
    ap.add_argument("--fmap-share", type=float, default=1.0, help="--fmap: share of the positive training studies "
                    "whose map is used (as RSNA's boxes cover a tenth)")
    ap.add_argument("--fmap-boxes", action="store_true", help="--fmap: each slice's map is the filled bounding box "
                    "of each level's fracture voxels in it (what RSNA's train_bounding_boxes.csv gives), not the voxels")
    ap.add_argument("--fmap-weight", type=float, default=1.0, help="--fmap: weight of the map's BCE")
    ap.add_argument("--fmap-pos-weight", type=float, default=1.0, help="--fmap: BCE pos_weight of a fractured cell")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rnd = np.random.default_rng(a.seed)
    clock = C.Clock()

    labels = C.read_train_csv(a.labels or default_labels(a.cache))
    uids = []
    for u in C.list_cached(a.cache):
        h = C.read_header(a.cache, u)
        if u in labels and h["cubes"].get("mask_256") and h["cubes"].get("image_full"):
            uids.append(u)
    if not uids:
        sys.exit(f"{a.cache}: no study with mask_256, image_full and a train.csv row")
    folds = C.read_folds(os.path.join(a.cache, "folds.csv"))
    if folds is None or any(u not in folds for u in uids):
        folds = C.make_folds([(u, labels[u]) for u in uids], a.folds, 0)
    def fmap_of(u, use):
        path = os.path.join(a.fmap, f"{u}.bin")
        if not (a.fmap and use and os.path.exists(path)):
            return None
        m = np.fromfile(path, np.uint8).reshape(C.read_header(a.cache, u)["cubes"]["image_full"])
        return boxes_of(m) if a.fmap_boxes else m

    frnd = np.random.default_rng(1000 + a.seed)
    train = [Study(a.cache, u, labels[u], a.zstep, fmap_of(u, frnd.random() < a.fmap_share))
             for u in uids if folds[u] != a.fold]
    if a.train_studies:
        train = train[:a.train_studies]
    val = [Study(a.cache, u, labels[u], a.zstep) for u in uids if folds[u] == a.fold]
    D, S = a.crop_d, a.crop
    vrnd = np.random.default_rng(0)
    items = [(*val_item(st, D, S, vrnd), st) for st in val]
    titems = [(*val_item(st, D, S, vrnd), st) for st in train[:a.train_auc]]
    # Constant prediction: the training fold's positive rate per target (overall = any vertebra).
    tl = np.array([C.study_truth(st.labels) for st in train])
    const = np.clip(tl.mean(0), 0.01, 0.99)
    pos = [st for st in train if st.labels[0] == 1]
    neg = [st for st in train if st.labels[0] != 1]
    print(f"{len(train)} train ({len(pos)} positive) / {len(val)} val studies, {sum(len(i[1]) for i in items)} val "
          f"crops; loaded in {clock():.1f} s; constant {np.round(const, 2).tolist()}", flush=True)

    if a.fmap:
        nm = sum(st.fmap is not None for st in pos)
        print(f"fracture maps: {nm} of {len(pos)} positive training studies; weight {a.fmap_weight}", flush=True)
    if a.arch == "plain":
        widths = tuple(C.parse_ints(a.plain_widths, 4))
        model = C.PlainClassifier(8, widths, pool=a.pool, dropout=a.dropout, where=bool(a.fmap))
        name = f"plain 3x3x3 CNN {a.plain_widths}" + (" + fracture map head" if a.fmap else "")
    else:
        dense = tuple(C.parse_ints(a.dense_widths)) if a.arch == "dense-stage" else ()
        model = C.Classifier(a.encoder, a.width, 8, a.pool, a.dropout, dense, where=bool(a.fmap))
        name = f"{a.encoder} width {a.width}" + (f" + dense 3x3x3 stage {a.dense_widths}" if dense else "") + (
            " + fracture map head on layer3" if a.fmap else "")
    opt = C.seed_adamw(model, a.lr, a.wd)
    params = list(model.parameters())
    print(f"model {name}: {C.n_params(model):,} params; batch {a.batch} x 3x{D}x{S}x{S}, "
          f"{a.steps} steps, lr {a.lr} warmup {a.warmup}, dropout {a.dropout}, augment {a.augment}", flush=True)
    rec = {"config": vars(a), "params": C.n_params(model), "train_studies": len(train), "val_studies": len(val),
           "const": const.tolist(), "steps": [], "evals": []}
    model.train()
    t_train, t_data, step, stopped = 0.0, 0.0, 0, None
    win, win_loss, win_aux = 0, 0.0, 0.0
    kept = dropped = 0
    while step < a.steps:
        if a.max_seconds and clock() > a.max_seconds:
            stopped = f"--max-seconds {a.max_seconds} reached"
            break
        t0 = time.time()
        xs, ys, ms, known = [], [], [], []
        for _ in range(a.batch):
            grp = pos if (pos and (not neg or rnd.random() < a.pos_share)) else neg
            st = grp[int(rnd.random() * len(grp))]
            x, y, v, *tm = train_sample(st, D, S, rnd, a.min_area, a.augment, a.p_frac, a.vis, bool(a.fmap))
            if a.fmap:
                ms.append(tm[0])
                known.append(float(st.fmap_known))
            if v is not None and st.labels[v] == 1:
                kept += int(y[v] == 1)
                dropped += int(y[v] == 0)
            xs.append(x)
            ys.append(y)
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        td = time.time() - t0
        lr = C.cosine_lr(step, a.lr, a.steps, a.warmup, a.eta_min)
        C.set_lr(opt, lr)
        opt.zero_grad(set_to_none=True)
        if a.fmap:
            logits, where = model(x, with_map=True)
            target = F.adaptive_max_pool3d(torch.from_numpy(np.stack(ms))[:, None], where.shape[1:])[:, 0]
            k = torch.tensor(known)[:, None, None, None]
            per = F.binary_cross_entropy_with_logits(where, target, reduction="none",
                                                     pos_weight=torch.tensor(a.fmap_pos_weight))
            aux = (per * k).sum() / (k.sum() * per[0].numel()).clamp(min=1)
            loss = F.binary_cross_entropy_with_logits(logits, y) + a.fmap_weight * aux
            win_aux += float(aux)
        else:
            loss = F.binary_cross_entropy_with_logits(model(x), y)
        lv, gn = C.update(opt, params, loss, a.clip, step)
        step += 1
        dt = time.time() - t0
        t_train += dt
        t_data += td
        rec["steps"].append({"step": step, "loss": lv, "lr": lr, "grad_norm": float(gn), "seconds": dt,
                             "data_seconds": td, "pos_frac": float(y[:, 0].mean())})
        win += 1
        win_loss += lv
        if step % a.log_every == 0 or step == a.steps:
            sps = t_train / step
            aux_s = f" (map {win_aux / win:.4f})" if a.fmap else ""
            print(f"step {step}/{a.steps} loss {win_loss / win:.4f}{aux_s} lr {lr:.2e} |g| {float(gn):.2f} {sps:.2f} s/step "
                  f"(data {t_data / step:.2f}) ETA {C.fmt_time(sps * (a.steps - step))} elapsed {C.fmt_time(clock())}",
                  flush=True)
            win, win_loss, win_aux = 0, 0.0, 0.0
        if a.val_every and step % a.val_every == 0 and step < a.steps:
            t0 = time.time()
            m = validate(model, items, const)
            if titems:
                m["train_crop_auc"] = validate(model, titems, const)["crop_auc"]
            rec["evals"].append({"step": step, **m, "seconds": time.time() - t0})
            print_eval(step, m, time.time() - t0)
        if step % 50 == 0:
            C.write_json(a.out, rec)
    t0 = time.time()
    m = validate(model, items, const)
    if titems:
        m["train_crop_auc"] = validate(model, titems, const)["crop_auc"]
    rec["evals"].append({"step": step, **m, "seconds": time.time() - t0})
    print_eval(step, m, time.time() - t0)
    last = rec["steps"][-min(20, len(rec["steps"])):]
    rec.update({"sec_per_step": t_train / max(1, step), "data_sec_per_step": t_data / max(1, step),
                "train_seconds": t_train, "total_seconds": clock(),
                "final_loss_avg20": sum(r["loss"] for r in last) / max(1, len(last)), "stopped": stopped,
                "fractured_pick_label_kept": kept, "fractured_pick_label_dropped": dropped, "final": m})
    C.write_json(a.out, rec)
    print(f"done: {step} steps, {t_train / max(1, step):.2f} s/step, total {C.fmt_time(clock())}; picked fractured "
          f"vertebrae whose label survived the visibility rule: {kept}/{kept + dropped}"
          f"{', ' + stopped if stopped else ''}{', wrote ' + a.out if a.out else ''}", flush=True)


def print_eval(step, m, sec):
    auc_s = f"{m['crop_auc']:.3f}" if m["crop_auc"] is not None else "-"
    lvl_s = f"{m['crop_auc_level']:.3f}" if m["crop_auc_level"] is not None else "-"
    print(f"eval step {step}: score {m['score']:.4f} (constant {m['const_score']:.4f}) crop AUC {auc_s} "
          f"(level-centred {lvl_s}) | "
          + " ".join(f"{k[5:]} {v:.3f}" for k, v in m.items() if k.startswith("loss_"))
          + (f" | train crop AUC {m['train_crop_auc']:.3f}" if m.get("train_crop_auc") is not None else "")
          + (f" | map AUC {m['map_auc']:.3f} (own vertebra {m['map_auc_own']:.3f})" if m.get("map_auc") is not None
             else "")
          + f" ({sec:.1f} s)",
          flush=True)


if __name__ == "__main__":
    main()

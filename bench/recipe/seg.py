#!/usr/bin/env python3
"""Recipe search for the segmentation stage in PyTorch (CPU): the CSN-UNet of train/seg.ts trained and
validated like `deno task train seg` does, on the preprocessing cache our pipeline writes.

  /usr/bin/python3 bench/recipe/seg.py --cache out/cache/phantoms --steps 300 --lr 2e-3 --warmup 30 \
      --out out/recipe/seg-lr2e-3.json

What it reproduces (TS source in brackets):
* samples [train/seg_data.ts, train/seg.ts]: a window of --slices slices of the study's [::2] image_256 at
  the seed's random start (uniform in [0, Z2 - slices - 1], 0 when shorter), zero-padded (raw 0) to the
  window and to a multiple of 16, resized in-plane to --size (box average for integer factors, else
  bilinear; masks nearest: infer/resample.ts), z-scored with header mean2/std2, labels > 7 -> 0. The train
  list is the non-validation studies x --multiplier, shuffled each epoch.
* augmentation (--augment, on by default): a cheap stand-in for seed 2.2 (not bit-exact with
  data/augment.ts): one draw per sample replayed on every slice: ShiftScaleRotate (shift +-0.1, scale +-0.1,
  rotate +-20 deg, p 0.5; raw-value border 0, image bilinear, mask nearest) and HorizontalFlip p 0.5; the
  rare Grid/Elastic distortions (p 0.2) are left out, but for --elastic-affine PX: ElasticTransform's random
  affine at PX pixels (the seed's 50 at 256 px; data/augment.ts segAugment scales it to the slice) with
  probability --p-elastic, to measure what it costs.
* model [models/unet.ts, infer/load.ts]: tests/csn_ref.py's CSN encoder + decoder with --decoder filters and
  --last channels, decoder Kaiming-normal init, backbone and final PyTorch default init.
* loss [models/losses.ts segLoss]: focal (gamma --gamma, mean over voxels) + --jaccard x soft Jaccard over
  C1..C7 (a class counts when it has > --min-pixels target voxels in the sample; eps 1e-4).
* optimisation [train/trainer.ts]: AdamW (wd --wd on non-bias parameters, eps 1e-8), lr linear warmup over
  --warmup steps then a per-step cosine to 1e-5 at --steps, gradient-norm clipping --clip.
* validation [infer/segment.ts predictVolume, infer/dice.ts DiceMeter]: every validation-fold study whole
  ([::2]), Z padded with raw 0 to a multiple of 32, z windows of --val-window overlapping by --val-overlap
  (later windows overwrite from overlap/2), softmax, p_c > 0.5 per class, resized back to 256 nearest, the
  seed's dice per class C1..C7 (> 10 truth voxels; 1 when |P| + |G| < 64) averaged over studies, `dice` =
  mean over the scored classes. Folds: <cache>/seg_folds.csv, or (absent) study i -> i % --folds, as
  train/seg.ts writes it (this script never writes into the cache).

--out writes JSON: the config, per-step loss/lr, per-eval dice per level, seconds per step.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


# ---------------------------------------------------------------------------------------------- data


def resize_image(vol, size):
    """[Z, H, W] float32 raw -> [Z, size, size] like infer/resample.ts "linear"."""
    Z, H, W = vol.shape
    if H == size and W == size:
        return vol
    t = torch.from_numpy(np.ascontiguousarray(vol)).unsqueeze(1)
    if H % size == 0 and W % size == 0:
        r = F.avg_pool2d(t, (H // size, W // size))
    else:
        r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return r.squeeze(1).numpy()


def nearest_index(src, dst):
    """cv2 INTER_NEAREST source indices: floor(d * src / dst)."""
    return np.minimum(src - 1, (np.arange(dst) * src) // dst)


def resize_labels(vol, size, how="nearest"):
    """Labels to the model's size: "nearest" (cv2 INTER_NEAREST: the top-left voxel of each block) or "mode"
    (the most frequent label of each k x k block, lowest label on ties; integer factors only)."""
    Z, H, W = vol.shape
    if H == size and W == size:
        return vol
    if how == "mode":
        ky, kx = H // size, W // size
        assert ky * size == H and kx * size == W, "mode needs integer factors"
        oh = F.one_hot(torch.from_numpy(vol.astype(np.int64)), 8).permute(0, 3, 1, 2).float()
        counts = F.avg_pool2d(oh, (ky, kx))
        return counts.argmax(1).numpy().astype(vol.dtype)
    return vol[:, nearest_index(H, size)][:, :, nearest_index(W, size)]


class Study:
    def __init__(self, cache, uid, size, keep_full_mask, labels="nearest"):
        h = C.read_header(cache, uid)
        self.uid = uid
        self.mean2, self.std2 = float(h["mean2"]), float(h["std2"])
        img = np.asarray(C.cube(cache, uid, "image_256", h)[::2], dtype=np.float32)
        msk = np.array(C.cube(cache, uid, "mask_256", h)[::2])
        msk[msk > 7] = 0
        self.z2 = img.shape[0]
        self.dz2 = 2 * float(h["spacing"][0])  # mm between the [::2] slices
        self.image = resize_image(img, size)  # raw values at the model's size
        self.mask = resize_labels(msk, size, labels)
        self.mask256 = msk if keep_full_mask else None


def seg_studies(cache):
    out = []
    for uid in C.list_cached(cache):
        h = C.read_header(cache, uid)
        if h["cubes"].get("mask_256") and h["cubes"].get("image_256"):
            out.append(uid)
    return out


def pos_channel(st, start, Z, S):
    """--pos: each slice's distance from the top of the scan (mm / 100) as a third input channel."""
    z = (start + torch.arange(Z, dtype=torch.float32)) * st.dz2 / 100.0
    return z[:, None, None].expand(Z, S, S)


def window_start(z2, slices, rng):
    return 0 if z2 <= slices else int(math.floor(rng.random() * (z2 - slices)))


def affine_theta(rng, p_ssr=0.5, p_flip=0.5, shift=0.1, scale=0.1, rotate=20.0):
    """Output->input map in normalised coordinates for F.affine_grid (None: identity)."""
    A = np.eye(3)
    changed = False
    if rng.random() < p_ssr:
        ang = math.radians(rng.uniform(-rotate, rotate))
        s = 1 + rng.uniform(-scale, scale)
        dx, dy = rng.uniform(-shift, shift), rng.uniform(-shift, shift)
        # forward: out = s R in + 2 (dx, dy) (normalised coords span 2); inverse for sampling
        R = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        fwd = np.eye(3)
        fwd[:2, :2] = s * R
        fwd[:2, 2] = [2 * dx, 2 * dy]
        A = np.linalg.inv(fwd) @ A
        changed = True
    if rng.random() < p_flip:
        A = A @ np.diag([-1.0, 1.0, 1.0])
        changed = True
    return torch.tensor(A[:2], dtype=torch.float32) if changed else None


def elastic_affine_theta(rng, H, W, alpha_affine):
    """The affine part of albumentations 1.3 ElasticTransform (data/augment.ts elasticMatrix): three points
    around the centre, each coordinate moved by U(-alpha_affine, alpha_affine) pixels, as an output->input map in
    normalised coordinates (align_corners False). Its elastic field (sigma 50 px) is ~0 at these sizes."""
    sq = min(H, W) // 3
    cx, cy = W // 2, H // 2
    p1 = np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], np.float64)
    p2 = p1 + rng.uniform(-alpha_affine, alpha_affine, p1.shape)
    src = np.c_[p1, np.ones(3)].T  # 3 x 3
    M = np.eye(3)
    M[:2] = p2.T @ np.linalg.inv(src)  # forward pixel map: p2 = M p1
    T = np.array([[2.0 / W, 0, 1.0 / W - 1], [0, 2.0 / H, 1.0 / H - 1], [0, 0, 1]])  # pixel -> normalised
    return T @ np.linalg.inv(M) @ np.linalg.inv(T)  # output -> input, normalised


def augment(img, msk, theta):
    """img [Z, S, S] raw float, msk [Z, S, S] int64: one 2-D affine replayed on every slice."""
    Z, H, W = img.shape
    grid = F.affine_grid(theta.unsqueeze(0).expand(Z, 2, 3), [Z, 1, H, W], align_corners=False)
    i = F.grid_sample(img.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = F.grid_sample(msk.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return i.squeeze(1), m.squeeze(1).long()


def make_sample(st, slices, rng, do_aug, elastic_affine=0.0, p_elastic=0.1):
    Zp = int(math.ceil(slices / 16) * 16)
    a = window_start(st.z2, slices, rng)
    n = min(slices, st.z2 - a)
    S = st.image.shape[1]
    img = torch.zeros(Zp, S, S)
    msk = torch.zeros(Zp, S, S, dtype=torch.long)
    img[:n] = torch.from_numpy(st.image[a:a + n])
    msk[:n] = torch.from_numpy(st.mask[a:a + n].astype(np.int64))
    if do_aug:
        th = affine_theta(rng)
        if elastic_affine and rng.random() < p_elastic:
            # applied after shift-scale-rotate and the flip, as data/augment.ts segAugment orders them
            A = np.eye(3)
            if th is not None:
                A[:2] = th.numpy()
            th = torch.tensor((A @ elastic_affine_theta(rng, S, S, elastic_affine))[:2], dtype=torch.float32)
        if th is not None:
            img, msk = augment(img, msk, th)
    img = (img - st.mean2) / st.std2
    return img, msk, a, st


# ---------------------------------------------------------------------------------------------- loss


def seg_loss(logits, target, jaccard=0.1, gamma=2.0, min_pixels=16, eps=1e-4, focal_w=1.0, fg_weight=1.0):
    """models/losses.ts segLoss (no ignored voxels occur: labels are 0..7); focal_w != 1 is not in our TS;
    fg_weight multiplies the focal term of vertebra voxels (segLoss's fgWeight)."""
    N, Cc = logits.shape[:2]
    logp = F.log_softmax(logits, 1)
    lpt = logp.gather(1, target.unsqueeze(1)).squeeze(1)
    w = 1.0 + (fg_weight - 1.0) * (target > 0).to(lpt.dtype)
    focal = -(w * (1 - lpt.exp()).pow(gamma) * lpt).sum() / max(1, lpt.numel())
    if jaccard == 0:
        return focal_w * focal, focal.detach(), torch.zeros(())
    p = logp.exp().reshape(N, Cc, -1)
    onehot = F.one_hot(target.reshape(N, -1), Cc).permute(0, 2, 1).to(p.dtype)
    I = (p * onehot).sum(2)
    P = p.sum(2)
    T = onehot.sum(2)
    J = 1 - (I + eps) / (P + T - I + eps)
    Jc, Tc = J[:, 1:], T[:, 1:]
    m = (Tc > min_pixels).to(p.dtype)
    k = m.sum(1)
    per = (m * Jc).sum(1) / k.clamp_min(1)
    v = (k > 0).to(p.dtype)
    jac = (v * per).sum() / v.sum().clamp_min(1)
    return focal_w * focal + jaccard * jac, focal.detach(), jac.detach()


def batch_dice(logits, target):
    """Cheap learning signals on a training batch: hard (argmax) dice, mean over the classes 1..7 present;
    and the foreground dice (p_background < 0.5 against any vertebra): "finds the bone" vs "names the level"."""
    pred = logits.argmax(1)
    d = []
    for c in range(1, 8):
        g = target == c
        G = int(g.sum())
        if G:
            p = pred == c
            d.append(2 * int((p & g).sum()) / (int(p.sum()) + G))
    fg = logits.softmax(1)[:, 0] < 0.5
    g = target > 0
    fgd = 2 * int((fg & g).sum()) / max(1, int(fg.sum()) + int(g.sum()))
    return (sum(d) / len(d) if d else 0.0), fgd


# ---------------------------------------------------------------------------------------------- validation


def window_starts(Z, window, overlap):
    if Z <= window:
        return [0]
    s, out = 0, []
    while s + window < Z:
        out.append(s)
        s += window - overlap
    out.append(Z - window)
    return out


@torch.no_grad()
def predict_probs(model, st, window, overlap, pad_multiple=32):
    """Softmax [8, Z2, S, S] of a whole study by the seed's z sliding window (infer/segment.ts)."""
    Z, S = st.z2, st.image.shape[1]
    Zp = int(math.ceil(Z / pad_multiple) * pad_multiple)
    raw = np.zeros((Zp, S, S), np.float32)
    raw[:Z] = st.image
    x = torch.from_numpy((raw - st.mean2) / st.std2)
    L = min(window, Zp)
    pos = getattr(model, "pos_channel", False)
    out = torch.zeros(8, Z, S, S)
    for k, s in enumerate(window_starts(Zp, window, overlap)):
        frm = 0 if k == 0 else overlap // 2
        n = min(L, Z - s) - frm
        if n <= 0:
            continue
        xin = x[s:s + L][None, None]
        if pos:
            xin = torch.cat([xin, xin, pos_channel(st, s, L, S)[None, None]], 1)
        p = F.softmax(model(xin), 1)[0]
        out[:, s + frm:s + frm + n] = p[:, frm:frm + n]
    return out


def dice_study(probs, truth256, sums, counts, upsample="nearest"):
    """infer/dice.ts DiceMeter.add with p_c > 0.5 resized back nearest to the truth's grid; sums[0] and
    counts[0] collect the foreground dice (p_background < 0.5 against any vertebra), not part of `dice`."""
    Z, H, W = truth256.shape
    S = probs.shape[2]
    if upsample == "bilinear" and S != H:
        # infer/segment.ts: the probabilities back to the grid bilinearly before the threshold.
        probs = F.interpolate(probs.unsqueeze(0), size=(probs.shape[1], H, W), mode="trilinear",
                              align_corners=False)[0]
        S = H
    iy, ix = nearest_index(S, H), nearest_index(S, W)
    above = (probs > 0.5).numpy()
    fg = (probs[0] < 0.5).numpy()[:, iy][:, :, ix]
    g = truth256 > 0
    sums[0] += 2 * int((fg & g).sum()) / max(1, int(fg.sum()) + int(g.sum()))
    counts[0] += 1
    for c in range(1, 8):
        g = truth256 == c
        G = int(g.sum())
        if G <= 10:
            continue
        pc = above[c][:, iy][:, :, ix]
        P = int(pc.sum())
        I = int((pc & g).sum())
        sums[c] += 1.0 if P + G < 64 else (2 * I + 1e-5) / (P + G + 1e-5)
        counts[c] += 1


def validate(model, val, a):
    model.eval()
    sums, counts = [0.0] * 8, [0] * 8
    for st in val:
        dice_study(predict_probs(model, st, a.val_window, a.val_overlap), st.mask256, sums, counts, a.upsample)
    model.train()
    per = {f"dice_C{c}": (sums[c] / counts[c] if counts[c] else None) for c in range(1, 8)}
    scored = [v for v in per.values() if v is not None]
    return {"dice": (sum(scored) / len(scored) if scored else float("nan")), **per,
            "fg_dice": sums[0] / max(1, counts[0])}


# ---------------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cache", default="out/cache/phantoms")
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=340)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--eta-min", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--jaccard", type=float, default=1.0, help="weight of the Jaccard term (seed 0.1)")
    ap.add_argument("--gamma", type=float, default=2.0, help="focal exponent")
    ap.add_argument("--min-pixels", type=int, default=16)
    ap.add_argument("--fg-weight", type=float, default=1.0, help="weight of vertebra voxels in the focal term")
    ap.add_argument("--focal", type=float, default=1.0, help="weight of the focal term (1 in our TS loss)")
    ap.add_argument("--encoder", default="r26ir")
    ap.add_argument("--width", type=int, default=8, help="encoder base channels")
    ap.add_argument("--decoder", default="8,16,16,32", help="decoder filters (4)")
    ap.add_argument("--last", type=int, default=8, help="last block channels")
    ap.add_argument("--augment", type=int, default=1)
    ap.add_argument("--elastic-affine", type=float, default=0.0,
                    help="pixels at the model's size: ElasticTransform's random affine (seed: 50 at 256 px)")
    ap.add_argument("--p-elastic", type=float, default=0.1,
                    help="its probability (segAugment: OneOf p 0.2, one of two)")
    ap.add_argument("--pos", type=int, default=0,
                    help="1: channels (image, image, distance from the scan's top in mm/100) instead of the image x3")
    ap.add_argument("--multiplier", type=int, default=4)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--val-window", type=int, default=64)
    ap.add_argument("--val-overlap", type=int, default=16)
    ap.add_argument("--val-every", type=int, default=100, help="0: only at the end")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop training after this long (0: no limit)")
    ap.add_argument("--overfit", type=int, default=0,
                    help="diagnostic: train on N fixed samples (drawn once, no augmentation) instead of the stream")
    ap.add_argument("--labels", default="nearest", choices=["nearest", "mode"],
                    help="training labels at the model's size: cv2 nearest, or each block's most frequent label")
    ap.add_argument("--upsample", default="nearest", choices=["nearest", "bilinear"],
                    help="validation: probabilities back to 256 nearest, or bilinearly (infer/segment.ts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    # The UNet needs D % 8 == 0 and H, W % 32 == 0 (models/unet.ts); windows are padded to 16 slices.
    if a.size % 32:
        ap.error(f"--size must be a multiple of 32 (the UNet's in-plane stride), got {a.size}")
    if a.val_window % 8 or a.val_overlap >= a.val_window:
        ap.error("--val-window must be a multiple of 8 and larger than --val-overlap")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    clock = C.Clock()

    uids = seg_studies(a.cache)
    if not uids:
        sys.exit(f"{a.cache}: no cached study with a mask")
    folds = C.read_folds(os.path.join(a.cache, "seg_folds.csv"))
    if folds is None:
        folds = {u: i % a.folds for i, u in enumerate(uids)}
    tr_ids = [u for u in uids if folds[u] != a.fold]
    va_ids = [u for u in uids if folds[u] == a.fold]
    train = [Study(a.cache, u, a.size, False, a.labels) for u in tr_ids]
    val = [Study(a.cache, u, a.size, True, a.labels) for u in va_ids]
    z2 = [s.z2 for s in train + val]
    print(f"{len(train)} train / {len(val)} val studies (Z2 {min(z2)}..{max(z2)}), loaded in {clock():.1f} s",
          flush=True)

    model = C.UNet(a.encoder, a.width, C.parse_ints(a.decoder, 4), a.last)
    model.pos_channel = bool(a.pos)
    opt = C.seed_adamw(model, a.lr, a.wd)
    params = [p for p in model.parameters()]
    print(f"model {a.encoder} width {a.width} decoder {a.decoder} last {a.last}: {C.n_params(model):,} params; "
          f"batch {a.batch} x {a.slices}x{a.size}x{a.size}, {a.steps} steps, lr {a.lr} warmup {a.warmup}, "
          f"jaccard {a.jaccard}, gamma {a.gamma}, augment {a.augment}", flush=True)

    items = len(train) * a.multiplier
    order = []
    rec = {"config": vars(a), "params": C.n_params(model), "train_studies": len(train), "val_studies": len(val),
           "steps": [], "evals": []}
    fixed = [make_sample(train[i % len(train)], a.slices, rng, False) for i in range(a.overfit)]
    model.train()
    t_train = 0.0
    win, win_loss, win_bd, win_fg = 0, 0.0, 0.0, 0.0
    step = 0
    stopped = None
    while step < a.steps:
        if a.max_seconds and clock() > a.max_seconds:
            stopped = f"--max-seconds {a.max_seconds} reached"
            break
        t0 = time.time()
        batch = []
        for _ in range(a.batch):
            if fixed:
                batch.append(fixed[(step * a.batch + len(batch)) % len(fixed)])
                continue
            if not order:
                order = list(rng.permutation(items))
            batch.append(make_sample(train[order.pop() % len(train)], a.slices, rng, a.augment,
                                     a.elastic_affine, a.p_elastic))
        x = torch.stack([b[0] for b in batch]).unsqueeze(1)
        if a.pos:
            x = torch.cat([x, x, torch.stack([pos_channel(b[3], b[2], x.shape[2], x.shape[3])
                                              for b in batch]).unsqueeze(1)], 1)
        y = torch.stack([b[1] for b in batch])
        lr = C.cosine_lr(step, a.lr, a.steps, a.warmup, a.eta_min)
        C.set_lr(opt, lr)
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss, focal, jac = seg_loss(logits, y, a.jaccard, a.gamma, a.min_pixels, focal_w=a.focal,
                                     fg_weight=a.fg_weight)
        bd, fgd = batch_dice(logits.detach(), y)
        lv, gn = C.update(opt, params, loss, a.clip, step)
        step += 1
        dt = time.time() - t0
        t_train += dt
        rec["steps"].append({"step": step, "loss": lv, "focal": float(focal), "jaccard": float(jac), "lr": lr,
                             "grad_norm": float(gn), "batch_dice": bd, "batch_fg_dice": fgd, "seconds": dt})
        win += 1
        win_loss += lv
        win_bd += bd
        win_fg += fgd
        if step % a.log_every == 0 or step == a.steps:
            sps = t_train / step
            print(f"step {step}/{a.steps} loss {win_loss / win:.4f} (focal {float(focal):.4f} jac {float(jac):.4f}) "
                  f"batch dice {win_bd / win:.3f} fg {win_fg / win:.3f} "
                  f"lr {lr:.2e} |g| {float(gn):.2f} {sps:.2f} s/step ETA {C.fmt_time(sps * (a.steps - step))} "
                  f"elapsed {C.fmt_time(clock())}", flush=True)
            win, win_loss, win_bd, win_fg = 0, 0.0, 0.0, 0.0
        if a.val_every and step % a.val_every == 0 and step < a.steps:
            t0 = time.time()
            m = validate(model, val, a)
            rec["evals"].append({"step": step, **m, "seconds": time.time() - t0})
            print_eval(step, m, time.time() - t0)
        C.write_json(a.out, rec) if step % 50 == 0 else None
    t0 = time.time()
    m = validate(model, val, a)
    rec["evals"].append({"step": step, **m, "seconds": time.time() - t0})
    print_eval(step, m, time.time() - t0)
    last = rec["steps"][-min(20, len(rec["steps"])):]
    rec.update({"sec_per_step": t_train / max(1, step), "train_seconds": t_train, "total_seconds": clock(),
                "final_loss_avg20": sum(r["loss"] for r in last) / max(1, len(last)), "stopped": stopped,
                "final": m})
    C.write_json(a.out, rec)
    print(f"done: {step} steps, {t_train / max(1, step):.2f} s/step, total {C.fmt_time(clock())}"
          f"{', ' + stopped if stopped else ''}{', wrote ' + a.out if a.out else ''}", flush=True)


def print_eval(step, m, sec):
    per = " ".join(f"C{c} {m[f'dice_C{c}']:.3f}" if m[f"dice_C{c}"] is not None else f"C{c} -" for c in range(1, 8))
    print(f"eval step {step}: dice {m['dice']:.4f} | {per} | foreground {m['fg_dice']:.3f} ({sec:.1f} s)", flush=True)


if __name__ == "__main__":
    main()

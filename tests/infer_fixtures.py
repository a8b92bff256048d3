"""Independent numpy references for tests/infer_test.ts.

Reads JSON from stdin:
  {"meta": [{"labels": [...], "shape": [Z, H, W]}, ...],
   "dice": [{"studies": [{"above": [...], "truth": [...]}, ...]}, ...],
   "level_dice": [{"pred": "a.nii.gz", "truth": "b.nii"}, ...]}
and writes JSON to stdout:
  {"meta": [{"sums": [8 ints], "boxes": {"c": [[z0, y0, x0, z1, y1, x1], area]}}, ...],
   "dice": [{"dice": float or null, "perClass": [float or null] * 7}, ...],
   "level_dice": [[float or null] * 7, ...]}

meta: the seed's compute_meta (skimage regionprops per label value, which is not installed here), written
with numpy: each non-zero label value is one region; its bbox is min index and max index + 1 per axis.
dice: the seed's validation dice (train_unet_3d.py + dice_round), in float64.
level_dice: per level C1..C7 the plain dice 2|P & G| / (|P| + |G|) of two NIfTI files on the same grid read
with nibabel (truth labels above 7 as background; null where neither has the level).
"""
import json
import sys

import numpy as np


def meta(case):
    lab = np.asarray(case["labels"], dtype=np.uint8).reshape(case["shape"])
    sums = [0] + [int((lab == c).sum()) for c in range(1, 8)]
    boxes = {}
    for v in np.unique(lab):
        if v == 0:
            continue
        idx = np.nonzero(lab == v)
        lo = [int(a.min()) for a in idx]
        hi = [int(a.max()) + 1 for a in idx]
        boxes[str(int(v))] = [lo + hi, int(len(idx[0]))]
    return {"sums": sums, "boxes": boxes}


def dice(case):
    total = np.zeros(8)
    count = np.zeros(8, dtype=np.int64)
    for st in case["studies"]:
        above = np.asarray(st["above"], dtype=np.uint8)
        truth = np.asarray(st["truth"], dtype=np.int64)
        truth = np.where(truth > 7, 0, truth)
        for c in range(1, 8):
            g = truth == c
            if g.sum() <= 10:
                continue
            p = ((above >> c) & 1).astype(bool)
            union = float(p.sum()) + float(g.sum()) + 1e-5
            d = 1.0 if union < 64 else (2.0 * float((p & g).sum()) + 1e-5) / union
            total[c] += d
            count[c] += 1
    per = [float(total[c] / count[c]) if count[c] else None for c in range(1, 8)]
    scored = [v for v in per if v is not None]
    return {"dice": float(np.mean(scored)) if scored else None, "perClass": per}


def level_dice(case):
    import nibabel as nib  # only this request needs it

    pred = np.asarray(nib.load(case["pred"]).dataobj).astype(np.int64)
    truth = np.asarray(nib.load(case["truth"]).dataobj).astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"grids differ: {pred.shape} vs {truth.shape}")
    truth = np.where(truth > 7, 0, truth)
    out = []
    for c in range(1, 8):
        p, g = pred == c, truth == c
        den = float(p.sum()) + float(g.sum())
        out.append(None if den == 0 else 2.0 * float((p & g).sum()) / den)
    return out


def main():
    req = json.load(sys.stdin)
    out = {
        "meta": [meta(c) for c in req.get("meta", [])],
        "dice": [dice(c) for c in req.get("dice", [])],
        "level_dice": [level_dice(c) for c in req.get("level_dice", [])],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""Independent references for tests/seg_data_test.ts: the seed's DatasetSeq sample (seed-pipeline.md 2.1)
written with numpy, and the in-plane resampling with OpenCV (cv2.INTER_AREA for integer downscales,
cv2.INTER_LINEAR otherwise, cv2.INTER_NEAREST for labels).

stdin: {"samples": [{"window": [...], "mask": [...], "shape": [n, H, W], "slices": S, "mean": m, "std": s}],
        "resize": [{"data": [...], "shape": [Z, H, W], "size": k, "mode": "linear" | "nearest"}]}
stdout: {"samples": [{"image": [...], "target": [...], "shape": [...]}], "resize": [{"data": [...]}]}
"""
import json
import sys

import cv2
import numpy as np


def sample(c):
    n, h, w = c["shape"]
    img = np.asarray(c["window"], dtype=np.float64).reshape(n, h, w)
    msk = np.asarray(c["mask"], dtype=np.uint8).reshape(n, h, w)
    s = c["slices"]
    # zero-pad (raw value 0) at the end to the window, then to a multiple of 16
    z = int(np.ceil(s / 16) * 16)
    img = np.concatenate([img, np.zeros((z - n, h, w))])
    msk = np.concatenate([msk, np.zeros((z - n, h, w), np.uint8)])
    img = (img - c["mean"]) / c["std"]
    msk[msk > 7] = 0
    return {"image": img.astype(np.float32).ravel().tolist(), "target": msk.ravel().tolist(), "shape": [z, h, w]}


def resize(c):
    z, h, w = c["shape"]
    k = c["size"]
    if c["mode"] == "nearest":
        a = np.asarray(c["data"], dtype=np.uint8).reshape(z, h, w)
        out = [cv2.resize(a[i], (k, k), interpolation=cv2.INTER_NEAREST) for i in range(z)]
    else:
        a = np.asarray(c["data"], dtype=np.float32).reshape(z, h, w)
        interp = cv2.INTER_AREA if h % k == 0 and w % k == 0 else cv2.INTER_LINEAR
        out = [cv2.resize(a[i], (k, k), interpolation=interp) for i in range(z)]
    return {"data": np.stack(out).astype(np.float64).ravel().tolist()}


req = json.load(sys.stdin)
json.dump({"samples": [sample(c) for c in req["samples"]], "resize": [resize(c) for c in req["resize"]]}, sys.stdout)

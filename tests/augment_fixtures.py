"""Reference for tests/augment_test.ts: albumentations 1.3 geometric transforms re-expressed with OpenCV,
numpy and scipy (albumentations itself is not installed), replaying steps drawn in TypeScript.

stdin: JSON list of cases, each one of
  {"kind": "plan", "shape": [Z, H, W], "image": [...], "mask": [...] | null, "steps": [...],
   "noise": {"<step index>": {"dx": [...], "dy": [...]}}}
      -> {"image": [...], "mask": [...] | null, "shape": [...], "matrices": {"<step index>": [6 floats]}}
  {"kind": "gauss", "shape": [H, W], "data": [...], "sigma": s} -> {"out": [...]}  (scipy gaussian_filter)
stdout: JSON list of results.
"""
import json
import sys

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

CONST = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def ssr_matrix(h, w, st):
    # albumentations >= 1.2.1 functional.shift_scale_rotate
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), st["angle"], st["scale"])
    m[0, 2] += st["dx"] * w
    m[1, 2] += st["dy"] * h
    return m


def elastic_matrix(h, w, shifts):
    # functional.elastic_transform's random affine; note (h, w) is used as an (x, y) point there
    cs = np.array((h, w), dtype=np.float32) // 2
    sq = min(h, w) // 3
    pts1 = np.array([cs + sq, [cs[0] + sq, cs[1] - sq], cs - sq], dtype=np.float32)
    pts2 = pts1 + np.array(shifts, dtype=np.float32).reshape(3, 2)
    return cv2.getAffineTransform(pts1, pts2)


def grid_axis(size, num_steps, steps):
    # functional.grid_distortion, one axis
    step = size // num_steps
    out = np.zeros(size, np.float32)
    prev = 0
    for i in range(num_steps + 1):
        start = i * step
        end = start + step
        if end > size:
            end = size
            cur = size
        else:
            cur = prev + step * steps[i]
        out[start:end] = np.linspace(prev, cur, end - start)
        prev = cur
    return out


def apply_step(img, interp, st, noise, mats, key):
    h, w = img.shape
    name = st["name"]
    if name == "HorizontalFlip":
        return np.ascontiguousarray(img[:, ::-1])
    if name == "VerticalFlip":
        return np.ascontiguousarray(img[::-1])
    if name == "RandomRotate90":
        return np.ascontiguousarray(np.rot90(img, st["k"]))
    if name == "PadIfNeeded":
        # PadIfNeeded.update_params, position "center"
        top = int((st["minHeight"] - h) / 2.0) if h < st["minHeight"] else 0
        bottom = st["minHeight"] - h - top if h < st["minHeight"] else 0
        left = int((st["minWidth"] - w) / 2.0) if w < st["minWidth"] else 0
        right = st["minWidth"] - w - left if w < st["minWidth"] else 0
        assert (top, bottom, left, right) == (st["top"], st["bottom"], st["left"], st["right"]), st
        return cv2.copyMakeBorder(img, st["top"], st["bottom"], st["left"], st["right"], cv2.BORDER_CONSTANT, value=0)
    if name == "LongestMaxSize":
        scale = st["maxSize"] / float(max(w, h))
        nh, nw = round(h * scale), round(w * scale)  # Python 3 round = half to even (py3round)
        assert (nh, nw) == (st["height"], st["width"]), ((nh, nw), st)
        return cv2.resize(img, (nw, nh), interpolation=interp)
    if name == "ShiftScaleRotate":
        m = ssr_matrix(h, w, st)
        mats[key] = m.ravel().tolist()
        return cv2.warpAffine(img, m, (w, h), flags=interp, **CONST)
    if name == "GridDistortion":
        xx = grid_axis(w, st["numSteps"], st["stepsX"])
        yy = grid_axis(h, st["numSteps"], st["stepsY"])
        mx, my = np.meshgrid(xx, yy)
        return cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), interpolation=interp, **CONST)
    if name == "ElasticTransform":
        m = elastic_matrix(h, w, st["shifts"])
        mats[key] = m.ravel().tolist()
        img = cv2.warpAffine(img, m, (w, h), flags=interp, **CONST)
        nz = noise[key]
        dx = np.float32(gaussian_filter(np.array(nz["dx"], np.float64).reshape(h, w), st["sigma"]) * st["alpha"])
        dy = np.float32(gaussian_filter(np.array(nz["dy"], np.float64).reshape(h, w), st["sigma"]) * st["alpha"])
        x, y = np.meshgrid(np.arange(w), np.arange(h))
        return cv2.remap(img, np.float32(x + dx), np.float32(y + dy), interpolation=interp, **CONST)
    raise ValueError(f"unknown step {name}")


def run_plan(c):
    z, h, w = c["shape"]
    img = np.array(c["image"], np.float32).reshape(z, h, w)
    mask = None if c["mask"] is None else np.array(c["mask"], np.uint8).reshape(z, h, w)
    noise = c.get("noise", {})
    out_i, out_m, mats = [], [], {}
    for s in range(z):
        a = img[s]
        b = None if mask is None else mask[s]
        for i, st in enumerate(c["steps"]):
            a = apply_step(a, cv2.INTER_LINEAR, st, noise, mats, str(i))
            if b is not None:
                b = apply_step(b, cv2.INTER_NEAREST, st, noise, mats, str(i))
        out_i.append(a)
        out_m.append(b)
    oi = np.stack(out_i) if z else np.zeros((0, h, w), np.float32)
    res = {"image": oi.ravel().tolist(), "shape": list(oi.shape), "matrices": mats, "mask": None}
    if mask is not None:
        res["mask"] = np.stack(out_m).ravel().tolist()
    return res


def main():
    out = []
    for c in json.load(sys.stdin):
        if c["kind"] == "plan":
            out.append(run_plan(c))
        elif c["kind"] == "gauss":
            h, w = c["shape"]
            d = np.array(c["data"], np.float64).reshape(h, w)
            out.append({"out": gaussian_filter(d, c["sigma"]).ravel().tolist()})
        else:
            raise ValueError(c["kind"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference values from PyTorch for the Deno tests.

Reads a JSON list of cases on stdin. Each case has:
  expr     a Python expression over the inputs a, b, c, ... (and `torch`), evaluated in float32/float64 as given
  inputs   [{"data": [...], "shape": [...], "dtype": "f32"|"i32"|"u8", "grad": bool}]
  grad_out optional {"data": [...], "shape": [...]}: if given, out.backward(grad_out) and report input grads
Writes a JSON list of {"out": {"data", "shape", "dtype"}, "grads": [list|null]} on stdout.
"""
import json
import sys

import torch

torch.set_num_threads(1)
DT = {"f32": torch.float32, "i32": torch.int32, "u8": torch.uint8, "f64": torch.float64}


def rsna_loss(logits, target):
    """Competition loss: per-row weighted BCE (overall 7/14, vertebrae 1/2), row-normalised, averaged."""
    w = torch.ones_like(target)
    w[:, 0] = 7.0
    w = w * (1 + target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return ((w * bce).sum(1) / w.sum(1)).mean()


def seg_loss(logits, target, gamma=2.0, min_pixels=16, eps=1e-4, ignore=255, jw=0.1, fg_weight=1.0):
    """Seed segmentation loss (seed-pipeline.md 2.3): focal + jw * soft Jaccard with the min-pixels rule;
    fg_weight weighs the focal term of the voxels with a label > 0 (the mean still divides by the voxel count)."""
    target = target.long()
    valid = target != ignore
    logp = torch.log_softmax(logits, 1)
    t = torch.where(valid, target, torch.zeros_like(target))
    lpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
    w = torch.where(target > 0, torch.full_like(lpt, fg_weight), torch.ones_like(lpt))
    focal = (-w * (1 - lpt.exp()) ** gamma * lpt)[valid].mean()
    p = logp.exp()
    n, c = logits.shape[:2]
    losses = []
    for b in range(n):
        per = []
        for k in range(1, c):
            tk = ((target[b] == k) & valid[b]).float()
            pk = p[b, k] * valid[b].float()
            if tk.sum() > min_pixels:
                inter = (pk * tk).sum()
                per.append(1 - (inter + eps) / (pk.sum() + tk.sum() - inter + eps))
        if per:
            losses.append(torch.stack(per).mean())
    jac = torch.stack(losses).mean() if losses else torch.zeros(())
    return focal + jw * jac


def to_json(t):
    t = t.detach()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    kind = {torch.float32: "f32", torch.float64: "f32", torch.int32: "i32", torch.int64: "i32", torch.uint8: "u8"}[t.dtype]
    return {"data": t.reshape(-1).tolist(), "shape": list(t.shape), "dtype": kind}


def run(case):
    names = "abcdefgh"
    env = {"torch": torch, "F": torch.nn.functional, "rsna_loss": rsna_loss, "seg_loss": seg_loss}
    inputs = []
    for i, spec in enumerate(case["inputs"]):
        t = torch.tensor(spec["data"], dtype=DT[spec["dtype"]]).reshape(spec["shape"])
        if spec.get("grad"):
            t.requires_grad_(True)
        inputs.append(t)
        env[names[i]] = t
    out = eval(case["expr"], env)
    res = {"out": to_json(out), "grads": []}
    go = case.get("grad_out")
    if go is not None:
        g = torch.tensor(go["data"], dtype=out.dtype).reshape(go["shape"])
        out.backward(g)
        res["grads"] = [t.grad.reshape(-1).tolist() if t.grad is not None else None for t in inputs]
    return res


def main():
    cases = json.load(sys.stdin)
    out = []
    for c in cases:
        try:
            out.append(run(c))
        except Exception as e:  # report per case so one bad case does not hide the others
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

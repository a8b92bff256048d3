#!/usr/bin/env python3
"""PyTorch CPU (Debian's python3-torch, 2 threads) on the conv bench cases of bench/conv_cases.json.

Prints one JSON object: {case name: {"fwd_ms": median, "fwdbwd_ms": median}}. fwd+bwd computes the weight
gradient and, unless the case says noInputGrad (the stem sees the network input), the input gradient.
"""
import json
import statistics
import sys
import time

import torch

torch.set_num_threads(2)
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cases = json.load(open(sys.argv[1]))
only = sys.argv[3] if len(sys.argv) > 3 else None
out = {}
for c in cases:
    if only and only not in c["name"]:
        continue
    x = torch.randn(c["x"])
    w = torch.randn(c["w"]) * 0.1
    kw = dict(stride=c["stride"], padding=c["padding"], groups=c["groups"])
    with torch.no_grad():
        torch.nn.functional.conv3d(x, w, **kw)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.nn.functional.conv3d(x, w, **kw)
            ts.append(time.perf_counter() - t0)
    fwd = statistics.median(ts)
    xg = x.clone().requires_grad_(not c.get("noInputGrad"))
    wg = w.clone().requires_grad_(True)
    y = torch.nn.functional.conv3d(xg, wg, **kw)
    y.backward(torch.ones_like(y))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        y = torch.nn.functional.conv3d(xg, wg, **kw)
        y.backward(torch.ones_like(y))
        ts.append(time.perf_counter() - t0)
    out[c["name"]] = {"fwd_ms": fwd * 1e3, "fwdbwd_ms": statistics.median(ts) * 1e3}
json.dump(out, sys.stdout)

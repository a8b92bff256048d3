#!/usr/bin/env python3
"""PyTorch CPU (2 threads) on a full-size model, the peer of `deno task bench:model`:

  /usr/bin/python3 bench/torch_model.py '{"model": "classifier", "depth": 152, "kind": "ir"}' 1,3,40,256,256

Prints one JSON line: forward (no grad, eval) and forward+backward (train mode, loss = mean(y^2)) seconds,
the median of `reps` runs after one warm-up. The model is tests/csn_ref.py's (the same architecture as ours).
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from csn_ref import build  # noqa: E402

torch.set_num_threads(2)
cfg = json.loads(sys.argv[1])
shape = [int(v) for v in sys.argv[2].split(",")]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
torch.manual_seed(0)
model = build(cfg)
x = torch.randn(shape)


def fwd():
    model.eval()
    with torch.no_grad():
        model(x)


def fwd_bwd():
    model.train()
    y = model(x)
    y = y[-1] if isinstance(y, list) else y
    (y ** 2).mean().backward()
    model.zero_grad(set_to_none=True)


out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cfg": cfg, "shape": shape}
for name, fn in (("fwd_s", fwd), ("fwd_bwd_s", fwd_bwd)):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    out[name] = statistics.median(ts)
print(json.dumps(out))

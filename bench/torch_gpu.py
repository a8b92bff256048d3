#!/usr/bin/env python3
"""The seed's stack on the same GPU, beside bench/gpu.ts: PyTorch eager with cuDNN, fp32 and AMP fp16.

  python3 bench/torch_gpu.py RESULTS.jsonl [parts...]      parts: gemm conv train (default: all)

Appends one JSON line per measurement. The models are tests/csn_ref.py (the same architectures as ours, with
mmaction2's names). Times come from CUDA events around many repetitions after warm-up.

"fp32" in PyTorch is two things: its default lets cuDNN convolutions run on TF32 tensor cores
(torch.backends.cudnn.allow_tf32 = True; 10-bit mantissas in the products), while matmuls stay IEEE fp32
(torch.backends.cuda.matmul.allow_tf32 = False). Our engine has no tensor cores from WebGPU, so every
fp32 figure is recorded both ways ("tf32": true / false) and each record says which it is.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from csn_ref import build  # noqa: E402

out_path = sys.argv[1]
parts = sys.argv[2:] or ["gemm", "conv", "train"]
dev = torch.device("cuda")


def record(r):
    r = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "peer": "torch " + torch.__version__,
         "gpu": torch.cuda.get_device_name(0), **r}
    line = json.dumps(r)
    print(line, flush=True)
    with open(out_path, "a") as f:
        f.write(line + "\n")


def time_ms(fn, min_s=0.2):
    fn()
    torch.cuda.synchronize()
    k = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        torch.cuda.synchronize()
        if time.perf_counter() - t0 >= min_s or k >= 4096:
            break
        k *= 2
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(k):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / k


if "gemm" in parts:
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for n in (4096, 8192):
            a = torch.randn(n, n, device=dev)
            b = torch.randn(n, n, device=dev)
            ms = time_ms(lambda: a @ b)
            record({"what": "gemm", "name": f"square {n}", "tf32": tf32, "ms": ms, "gflops": 2 * n**3 / ms / 1e6})
    torch.backends.cuda.matmul.allow_tf32 = False

if "conv" in parts:
    cases = json.load(open(os.path.join(os.path.dirname(__file__), "conv_cases.json")))
    for c, tf32 in [(c, t) for t in (True, False) for c in cases]:
        torch.backends.cudnn.allow_tf32 = tf32
        xs = [8] + c["x"][1:]
        x = torch.randn(xs, device=dev)
        w = (torch.randn(c["w"], device=dev) * 0.1)
        kw = dict(stride=c["stride"], padding=c["padding"], groups=c["groups"])
        with torch.no_grad():
            fwd = time_ms(lambda: torch.nn.functional.conv3d(x, w, **kw))
        xg = x.clone().requires_grad_(not c.get("noInputGrad", False))
        wg = w.clone().requires_grad_(True)

        def fb():
            torch.nn.functional.conv3d(xg, wg, **kw).sum().backward()
            wg.grad = None
            xg.grad = None

        record({"what": "conv", "name": c["name"], "x": xs, "tf32": tf32, "fwdMs": fwd, "fwdBwdMs": time_ms(fb)})
    torch.backends.cudnn.allow_tf32 = True

if "train" in parts:
    for name, cfg, shape in (
        ("ir-CSN-152 classifier", {"model": "classifier", "depth": 152, "kind": "ir"}, [16, 3, 40, 256, 256]),
        ("ir-CSN-50 UNet", {"model": "unet", "depth": 50, "kind": "ir"}, [4, 1, 64, 256, 256]),
    ):
        # PyTorch's default fp32 (TF32 convs), then IEEE fp32 throughout, then AMP (f16 under autocast).
        for amp, tf32 in ((False, True), (False, False), (True, True)):
            torch.backends.cudnn.allow_tf32 = tf32
            torch.manual_seed(0)
            model = build(cfg).to(dev).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
            scaler = torch.cuda.amp.GradScaler(enabled=amp)
            x = torch.randn(shape, device=dev)

            def step():
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    y = model(x)
                    loss = (y.float() ** 2).mean()
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)

            try:
                torch.cuda.reset_peak_memory_stats()
                step()
                step()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(3):
                    step()
                torch.cuda.synchronize()
                s = (time.perf_counter() - t0) / 3
                record({"what": "train", "model": name, "shape": shape, "amp": amp, "tf32": tf32, "stepSeconds": s,
                        "samplesPerSecond": shape[0] / s,
                        "peakGiB": torch.cuda.max_memory_allocated() / 2**30})
            except Exception as e:  # noqa: BLE001 - report and go on with the next configuration
                record({"what": "train", "model": name, "amp": amp, "tf32": tf32, "error": str(e)[:300]})
            del model, opt, x
            torch.cuda.empty_cache()
    torch.backends.cudnn.allow_tf32 = True

#!/usr/bin/env python3
"""Our engine's training curve beside PyTorch's for the same recipe, as one SVG (no plotting library needed).

  /usr/bin/python3 bench/recipe/compare.py --torch out/recipe/seg-x.json --ours out/pipeline/seg \
      --metric dice --title "tiny seg recipe" --out docs/recipe-seg.svg

--torch: a seg.py / cls.py JSON (per-step loss, evals); --ours: a run folder (log.jsonl: step lines with
loss, epoch lines with metrics). Left panel: training loss (mean over a 20-step window) against step; right:
the validation metric against step (seg: mean dice; cls: the competition score, with the constant beside it).
"""
import argparse
import json
import os


def smooth(xs, ys, k=20):
    out = []
    for i in range(len(ys)):
        w = ys[max(0, i - k + 1):i + 1]
        out.append((xs[i], sum(w) / len(w)))
    return out


def load_torch(path, metric):
    d = json.load(open(path))
    steps = [s["step"] for s in d["steps"]]
    loss = [s["loss"] for s in d["steps"]]
    evals = [(e["step"], e.get(metric)) for e in d["evals"] if e.get(metric) is not None]
    return smooth(steps, loss), evals


def load_ours(folder, metric):
    steps, loss, evals = [], [], []
    for line in open(os.path.join(folder, "log.jsonl")):
        r = json.loads(line)
        if "metrics" in r:
            v = r["metrics"].get(metric)
            if v is not None:
                evals.append((r["step"], v))
        elif "loss" in r:
            steps.append(r["step"])
            loss.append(r["loss"])
    return smooth(steps, loss, 3), evals


def panel(x0, y0, w, h, series, title, ylabel):
    """series: [(points, colour, label, markers)] -> SVG elements of one panel."""
    pts = [p for s in series for p in s[0]]
    if not pts:
        return [f'<text x="{x0 + 10}" y="{y0 + 20}">no data</text>']
    xmax = max(p[0] for p in pts) or 1
    ys = [p[1] for p in pts]
    ymin, ymax = min(0.0, min(ys)), max(ys) * 1.05 or 1
    X = lambda v: x0 + 50 + (w - 60) * v / xmax  # noqa: E731
    Y = lambda v: y0 + h - 30 - (h - 50) * (v - ymin) / (ymax - ymin)  # noqa: E731
    out = [f'<rect x="{x0 + 50}" y="{y0 + 20}" width="{w - 60}" height="{h - 50}" fill="none" stroke="#999"/>',
           f'<text x="{x0 + w / 2}" y="{y0 + 14}" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<text x="{x0 + w / 2}" y="{y0 + h - 5}" text-anchor="middle">step</text>',
           f'<text x="{x0 + 12}" y="{y0 + h / 2}" transform="rotate(-90 {x0 + 12} {y0 + h / 2})" '
           f'text-anchor="middle">{ylabel}</text>']
    for t in range(5):
        v = ymin + (ymax - ymin) * t / 4
        out.append(f'<text x="{x0 + 46}" y="{Y(v) + 4}" text-anchor="end" font-size="10">{v:.3g}</text>')
        s = xmax * t / 4
        out.append(f'<text x="{X(s)}" y="{y0 + h - 17}" text-anchor="middle" font-size="10">{s:.0f}</text>')
    for k, (p, colour, label, markers) in enumerate(series):
        if not p:
            continue
        if markers:
            out += [f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="3.5" fill="{colour}"/>' for a, b in p]
            if len(p) > 1:
                out.append('<polyline fill="none" stroke-dasharray="4 3" stroke="%s" points="%s"/>' % (
                    colour, " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in p)))
        else:
            out.append('<polyline fill="none" stroke-width="1.5" stroke="%s" points="%s"/>' % (
                colour, " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in p)))
        out.append(f'<text x="{x0 + w - 15}" y="{y0 + h - 40 - 14 * k}" text-anchor="end" fill="{colour}" '
                   f'font-size="11">{label}</text>')
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--metric", default="dice")
    ap.add_argument("--constant", type=float, default=None, help="a baseline drawn on the metric panel")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tl, te = load_torch(a.torch, a.metric)
    ol, oe = load_ours(a.ours, a.metric)
    W, H = 900, 330
    metric_series = [(te, "#d62728", f"PyTorch 1.13 CPU: {a.metric}", True),
                     (oe, "#1f77b4", f"ours (lavapipe): {a.metric}", True)]
    if a.constant is not None:
        xmax = max([p[0] for p in te + oe] or [1])
        metric_series.append(([(0, a.constant), (xmax, a.constant)], "#777", "best constant prediction", False))
    els = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 30}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{a.title}</text>',
           *panel(0, 25, W / 2, H, [(tl, "#d62728", "PyTorch 1.13 CPU", False), (ol, "#1f77b4", "ours (lavapipe)",
                                                                                False)],
                  "training loss (PyTorch: 20-step mean; ours: logged every 10th step, mean of 3)", "loss"),
           *panel(W / 2, 25, W / 2, H, metric_series, f"validation {a.metric}", a.metric), "</svg>"]
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(els) + "\n")
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

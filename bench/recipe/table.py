#!/usr/bin/env python3
"""Markdown table of recipe runs from their --out JSON files (seg.py or cls.py):

  /usr/bin/python3 bench/recipe/table.py out/recipe/seg-*.json
"""
import json
import sys

SEG_KEYS = ["slices", "size", "batch", "steps", "lr", "warmup", "jaccard", "gamma", "width", "augment"]
CLS_KEYS = ["crop_d", "crop", "batch", "steps", "lr", "warmup", "width", "dropout", "augment"]


def fmt(v):
    """A metric: 3 decimals."""
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def cfg(v):
    """A setting: shortest form."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def main(paths):
    seg, cls = [], []
    for p in paths:
        try:
            r = json.load(open(p))
        except (OSError, json.JSONDecodeError) as e:
            print(f"skip {p}: {e}", file=sys.stderr)
            continue
        if not r.get("evals"):
            continue
        (seg if "dice" in r["evals"][-1] else cls).append((p, r))
    if seg:
        print("| run | " + " | ".join(SEG_KEYS) + " | steps done | s/step | loss (last 20) | C1 | C2 | C3 | C4 | C5 | C6 | C7 "
              "| dice | best dice (step) | fg dice |")
        print("|" + "---|" * (len(SEG_KEYS) + 14))
        for p, r in seg:
            c, f = r["config"], r["evals"][-1]
            best = max(r["evals"], key=lambda e: e["dice"] if e["dice"] == e["dice"] else -1)
            steps = r["steps"][-1]["step"] if r["steps"] else 0
            print(f"| {p.split('/')[-1].removesuffix('.json')} | " + " | ".join(cfg(c.get(k)) for k in SEG_KEYS)
                  + f" | {steps} | {fmt(r.get('sec_per_step'))} | {fmt(r.get('final_loss_avg20'))} | "
                  + " | ".join(fmt(f.get(f'dice_C{i}')) for i in range(1, 8))
                  + f" | {fmt(f['dice'])} | {fmt(best['dice'])} ({best['step']}) | {fmt(f.get('fg_dice'))} |")
    if cls:
        print("| run | " + " | ".join(CLS_KEYS) + " | steps done | s/step | loss (last 20) | score | constant | crop AUC "
              "| best score (step) |")
        print("|" + "---|" * (len(CLS_KEYS) + 8))
        for p, r in cls:
            c, f = r["config"], r["evals"][-1]
            best = min(r["evals"], key=lambda e: e["score"])
            steps = r["steps"][-1]["step"] if r["steps"] else 0
            print(f"| {p.split('/')[-1].removesuffix('.json')} | " + " | ".join(cfg(c.get(k)) for k in CLS_KEYS)
                  + f" | {steps} | {fmt(r.get('sec_per_step'))} | {fmt(r.get('final_loss_avg20'))} | {fmt(f['score'])} "
                  f"| {fmt(f['const_score'])} | {fmt(f.get('crop_auc'))} | {fmt(best['score'])} ({best['step']}) |")


if __name__ == "__main__":
    main(sys.argv[1:])

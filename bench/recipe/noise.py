#!/usr/bin/env python3
"""How far a bench/recipe/cls.py run is from a constant prediction, with the noise of its validation studies.

    /usr/bin/python3 bench/recipe/noise.py RUN.json LABELS.csv

For each evaluation in RUN.json (its `studies`: per validation study the truth and the aggregated prediction)
it prints a Markdown row: the score, cls.py's constant (training-fold positive rates), the best constant (the
one that minimises the competition's weighted log loss on the training fold: per output, the positive rate
with each study weighted as the metric weights it), the model minus the best constant with its paired standard
error, and a 95 % bootstrap interval over the validation studies (20000 resamples, the same draws for every
row). An interval above 0 says the model is worse than the constant by more than the validation set's noise.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def best_constant(truths):
    """Per output, the weighted positive rate that minimises the mean study loss on `truths`."""
    num, den = np.zeros(8), np.zeros(8)
    for y in truths:
        w = C.metric_weights(y)
        u = w / w.sum()
        den += u
        num += u * y
    return np.clip(num / den, 0.01, 0.99)


def fmt(v):
    return "-" if v is None else f"{v:.3f}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run = json.load(open(sys.argv[1]))
    labels = C.read_train_csv(sys.argv[2])
    evals = [e for e in run["evals"] if "studies" in e]
    if not evals:
        sys.exit(f"{sys.argv[1]}: no evaluation with per-study predictions (`studies`); rerun bench/recipe/cls.py")
    val = [s["uid"] for s in evals[0]["studies"]]
    vset = set(val)
    train = [u for u in C.list_cached(run["config"]["cache"]) if u in labels and u not in vset]
    ty = [C.study_truth(labels[u]) for u in train]
    best, rate = best_constant(ty), np.clip(np.mean(ty, 0), 0.01, 0.99)
    ys = [np.array(s["truth"], np.float64) for s in evals[0]["studies"]]
    n = len(ys)
    lb, lr = C.study_losses([best] * n, ys), C.study_losses([rate] * n, ys)
    draws = np.random.default_rng(0).integers(0, n, (20000, n))
    print(f"{len(train)} training / {n} validation studies ({int(sum(y[0] for y in ys))} positive)")
    print(f"cls.py's constant (positive rates) {np.round(rate, 3).tolist()} -> {lr.mean():.4f}")
    print(f"best constant {np.round(best, 3).tolist()} -> {lb.mean():.4f} (its per-study standard error "
          f"{lb.std(ddof=1) / np.sqrt(n):.4f})")
    print("| step | score | cls.py constant | best constant | model - best (paired SE) | 95 % bootstrap | crop AUC "
          "| level-centred | training crop AUC |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for e in evals:
        if [s["uid"] for s in e["studies"]] != val:
            sys.exit(f"{sys.argv[1]}: step {e['step']} evaluated other studies than step {evals[0]['step']}")
        d = C.study_losses([s["pred"] for s in e["studies"]], ys) - lb
        lo, hi = np.percentile(d[draws].mean(1), [2.5, 97.5])
        print(f"| {e['step']} | {e['score']:.4f} | {lr.mean():.4f} | {lb.mean():.4f} | {d.mean():+.4f} "
              f"({d.std(ddof=1) / np.sqrt(n):.4f}) | [{lo:+.4f}, {hi:+.4f}] | {fmt(e['crop_auc'])} | "
              f"{fmt(e['crop_auc_level'])} | {fmt(e.get('train_crop_auc'))} |")


if __name__ == "__main__":
    main()

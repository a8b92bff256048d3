"""Independent numpy reference of the competition metric for tests/metric_test.ts.

Reads JSON from stdin:
  {"aggregate": [{"logits": [[8 floats] * k]}, ...],
   "score": [{"pred": [[8 probs] * n], "truth": [[8 labels] * n]}, ...]}
writes JSON:
  {"aggregate": [[8 probs], ...], "score": [{"score": f, "perTarget": [8 floats]}, ...]}

aggregate: seed section 4.7: sigmoid of every crop's logits, max over crops per output, clip [0.01, 0.99].
score: seed section 6: weights patient_overall 14/7 and vertebrae 2/1 (positive/negative); per study the
weighted BCE divided by the study's weight sum, averaged over studies; per target the weighted log loss of
that column over studies. p is clipped to [1e-15, 1 - 1e-15] (sklearn's log_loss eps) before the logs.
Computed column-wise with numpy arrays, in float64.
"""
import json
import sys

import numpy as np

EPS = 1e-15


def aggregate(case):
    z = np.asarray(case["logits"], dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    return np.clip(p.max(axis=0), 0.01, 0.99).tolist()


def score(case):
    p = np.clip(np.asarray(case["pred"], dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(case["truth"], dtype=np.float64)
    w = np.where(y == 1, 2.0, 1.0)
    w[:, 0] = np.where(y[:, 0] == 1, 14.0, 7.0)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    per_study = (w * bce).sum(axis=1) / w.sum(axis=1)
    per_target = (w * bce).sum(axis=0) / w.sum(axis=0)
    return {"score": float(per_study.mean()), "perTarget": per_target.tolist()}


def main():
    req = json.load(sys.stdin)
    out = {
        "aggregate": [aggregate(c) for c in req.get("aggregate", [])],
        "score": [score(c) for c in req.get("score", [])],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

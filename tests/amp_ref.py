"""numpy's float16 rounding for tests/amp_test.ts: reads {"x": [...]} (f32 values; strings for -0, inf and nan) on stdin, writes the
float16 bit patterns and their values widened back to float32 (null for NaN) as JSON."""
import json
import sys

import numpy as np

req = json.load(sys.stdin)
with np.errstate(over="ignore"):
    h = np.array([float(v) for v in req["x"]], dtype=np.float32).astype(np.float16)
back = h.astype(np.float32)
json.dump({
    "bits": h.view(np.uint16).astype(int).tolist(),
    "back": [None if np.isnan(v) else (str(v) if np.isinf(v) else float(v)) for v in back],
}, sys.stdout)

"""Reference for data/components.ts: scipy.ndimage.label per label value, then each label's largest
component kept (ties: the lowest component number, i.e. the one whose first voxel comes first in raster
order, as np.argmax picks). Reads {"cases": [{"shape", "data", "connectivity"}]} on stdin and writes
{"kept": [[...]], "counts": [[...]]}: the kept volume and each case's sorted component sizes."""
import json
import sys

import numpy as np
from scipy import ndimage

req = json.load(sys.stdin)
kept, counts = [], []
for c in req["cases"]:
    vol = np.array(c["data"], dtype=np.uint8).reshape(c["shape"])
    rank = 3 if c["connectivity"] == 26 else 1
    structure = ndimage.generate_binary_structure(3, rank)
    out = np.zeros_like(vol)
    sizes = []
    for v in np.unique(vol):
        if v == 0:
            continue
        comp, n = ndimage.label(vol == v, structure=structure)
        size = np.bincount(comp.ravel())[1:]
        sizes += size.tolist()
        out[comp == 1 + int(np.argmax(size))] = v
    kept.append(out.ravel().tolist())
    counts.append(sorted(sizes))
json.dump({"kept": kept, "counts": counts}, sys.stdout)

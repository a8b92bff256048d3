/**
 * Vertebra crops (data/crops.ts): labelBoxes against numpy (np.nonzero per label: min, max + 1, count) on a
 * random label cube with disconnected voxels and an absent label, plus hand-computed cases; resampleArea
 * against block means (integer downscaling), repetition (integer upscaling) and a hand-computed uneven
 * split, and the z-score option.
 */
import { labelBoxes, resampleArea } from "../data/crops.ts";
import { assertClose, prng } from "./helpers.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";

const SCRIPT = `
import json, numpy as np
rng = np.random.default_rng(3)
m = np.zeros((7, 9, 11), np.uint8)
m[1:4, 2:6, 3:9] = 1
m[5, 8, 10] = 1          # a stray voxel far from label 1's blob
m[0:7, 0:2, 0:2] = 2
m[rng.random(m.shape) < 0.03] = 4   # scattered voxels; label 3 is absent
m[6, 4, 0] = 7
boxes = {}
for v in np.unique(m):
    if v == 0:
        continue
    z, y, x = np.nonzero(m == v)
    boxes[int(v)] = [int(z.min()), int(y.min()), int(x.min()), int(z.max()) + 1, int(y.max()) + 1,
                     int(x.max()) + 1, int(z.size)]
print(json.dumps({"mask": m.ravel().tolist(), "shape": list(m.shape), "boxes": boxes}))
`;

Deno.test("labelBoxes matches numpy; hand-computed cases; bad shapes fail", async () => {
  const o = await new Deno.Command(PY, { args: ["-c", SCRIPT], stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(new TextDecoder().decode(o.stderr));
  const ref = JSON.parse(new TextDecoder().decode(o.stdout));
  const got = labelBoxes(Uint8Array.from(ref.mask), ref.shape);
  const want = Object.entries(ref.boxes as Record<string, number[]>).map(([k, v]) => [Number(k), v]);
  const gotList = [...got].map(([k, b]) => [k, [b.z0, b.y0, b.x0, b.z1, b.y1, b.x1, b.area]]);
  if (JSON.stringify(gotList) !== JSON.stringify(want)) {
    throw new Error(`labelBoxes\n got ${JSON.stringify(gotList)}\nwant ${JSON.stringify(want)}`);
  }
  // One voxel; two voxels at opposite corners; background other than 0.
  const one = labelBoxes([0, 0, 0, 5], [1, 2, 2]).get(5);
  if (JSON.stringify(one) !== JSON.stringify({ z0: 0, y0: 1, x0: 1, z1: 1, y1: 2, x1: 2, area: 1 })) {
    throw new Error(`one voxel: ${JSON.stringify(one)}`);
  }
  const corners = new Uint8Array(2 * 3 * 4);
  corners[0] = corners[23] = 9;
  const c = labelBoxes(corners, [2, 3, 4]).get(9)!;
  if ([c.z0, c.y0, c.x0, c.z1, c.y1, c.x1, c.area].join() !== "0,0,0,2,3,4,2") throw new Error("corners");
  const bg = labelBoxes([1, 1, 0, 1], [1, 1, 4], { background: 1 });
  if ([...bg.keys()].join() !== "0" || bg.get(0)!.x0 !== 2 || bg.get(0)!.x1 !== 3) {
    throw new Error("background");
  }
  if (labelBoxes(new Uint8Array(8), [2, 2, 2]).size !== 0) throw new Error("empty mask has boxes");
  for (const [shape, msg] of [[[2, 2], "shape must be [Z, Y, X]"], [[2, 2, 3], "8 values do not fill"]]) {
    try {
      labelBoxes(new Uint8Array(8), shape as number[]);
      throw new Error("no error");
    } catch (e) {
      if (!(e as Error).message.includes(`labelBoxes: ${msg}`)) throw e;
    }
  }
});

Deno.test("resampleArea: block means, repetition, uneven split, z-score", () => {
  const rng = prng(4);
  const src = Float32Array.from({ length: 4 * 6 * 8 }, () => rng() * 100 - 50);
  // Integer downscaling by (2, 2, 2) is the mean of each 2x2x2 block.
  const want: number[] = [];
  for (let z = 0; z < 2; z++) {
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 4; x++) {
        let s = 0;
        for (let k = 0; k < 8; k++) {
          s += src[((2 * z + (k >> 2)) * 6 + 2 * y + ((k >> 1) & 1)) * 8 + 2 * x + (k & 1)];
        }
        want.push(s / 8);
      }
    }
  }
  assertClose(resampleArea(src, [4, 6, 8], [2, 3, 4]), want, "block means", 1e-6);
  assertClose(
    resampleArea(src, [4, 6, 8], [2, 3, 4], { mean: 3, std: 2 }),
    want.map((v) => (v - 3) / 2),
    "z-scored",
    1e-6,
  );
  // Integer upscaling repeats each voxel.
  const up = resampleArea([1, 2, 3, 4], [1, 2, 2], [2, 4, 4]);
  const rep = Array.from({ length: 32 }, (_, i) => [1, 2, 3, 4][((i >> 3) & 1) * 2 + ((i >> 1) & 1)]);
  assertClose(up, rep, "repetition", 0, 0);
  // 3 -> 2 along x: cells [0, 1) and [1, 3).
  assertClose(resampleArea([10, 20, 40], [1, 1, 3], [1, 1, 2]), [10, 30], "uneven", 0, 0);
  try {
    resampleArea([1, 2], [1, 1, 2], [1, 0, 2]);
    throw new Error("no error");
  } catch (e) {
    if (!(e as Error).message.includes("resampleArea: outShape must be")) throw e;
  }
});

/**
 * @file How well the segmentor's masks guide the classifier's crops: for every cached study that has a true
 * mask (optionally only those of one fold of seg_folds.csv, the segmentor's validation studies), each true
 * vertebra's predicted box (seg_meta.json, what the crops are centred on) against its true box on the same
 * grid: whether the predicted centre's slice lies in the true level, in a neighbour's (the crop then shows,
 * and is labelled as, the wrong vertebra), or the level was not found; the median offsets of the centres.
 *   deno run -A bench/recipe/crop_levels.ts --cache out/cache/phantoms [--fold 1]
 */
import { readCube, readHeader } from "../../data/mod.ts";
import { readFoldsCsv } from "../../data/rsna.ts";
import { computeMeta, readSegMetaFile } from "../../infer/meta.ts";
import { cacheFlags } from "./cache_flags.ts";

const SPECS = {
  cache: { type: "string", help: "the preprocessing cache, after predict-seg" },
  fold: { type: "number", help: "only the studies of this fold of <cache>/seg_folds.csv" },
} as const;
const f = cacheFlags("crop_levels.ts", SPECS);
const cache = f.cache as string;
const folds = f.fold !== undefined ? await readFoldsCsv(`${cache}/seg_folds.csv`) : null;
let studies = 0, found = 0, right = 0, neighbour = 0, missing = 0;
const dz: number[] = [], dyx: number[] = [];
for (
  const e of [...Deno.readDirSync(cache)].filter((e) => e.isDirectory).sort((a, b) =>
    a.name < b.name ? -1 : 1
  )
) {
  const header = await readHeader(cache, e.name);
  if (!header.cubes.mask_256 || (folds && folds.get(e.name) !== f.fold)) continue;
  const pred = await readSegMetaFile(cache, e.name);
  // The true labels on the prediction's grid: slices 0, 2, 4, ... as predict-seg reads the image.
  const mask = await readCube(cache, e.name, "mask_256", { zStep: 2 });
  const truth = computeMeta(mask.data as Uint8Array, mask.shape, { mean: 0, std: 1 });
  const p = pred.meta;
  studies++;
  for (let c = 1; c <= 7; c++) {
    const t = truth.boxes[String(c)];
    if (!t) continue;
    found++;
    const q = p.boxes[String(c)];
    if (!q) {
      missing++;
      continue;
    }
    const [tz0, ty0, tx0, tz1, ty1, tx1] = t[0], [qz0, qy0, qx0, qz1, qy1, qx1] = q[0];
    const zc = (qz0 + qz1) / 2;
    dz.push(Math.abs((tz0 + tz1) / 2 - zc));
    dyx.push(Math.hypot((ty0 + ty1 - qy0 - qy1) / 2, (tx0 + tx1 - qx0 - qx1) / 2));
    if (zc >= tz0 && zc <= tz1) right++;
    else if (
      Object.entries(truth.boxes).some(([k, b]) => k !== String(c) && zc >= b[0][0] && zc <= b[0][3])
    ) {
      neighbour++;
    }
  }
}
const median = (a: number[]) => a.length ? a.sort((x, y) => x - y)[a.length >> 1] : NaN;
const pct = (k: number) => `${k} (${(100 * k / Math.max(1, found)).toFixed(0)} %)`;
console.log(
  `${studies} studies with a true mask${f.fold !== undefined ? ` in fold ${f.fold}` : ""}, ${found} true ` +
    `vertebrae: predicted centre in its own level ${pct(right)}, in another level ${pct(neighbour)}, ` +
    `elsewhere ${pct(found - right - neighbour - missing)}, not found ${
      pct(missing)
    }; median centre offset ` +
    `${median(dz)} slices of the prediction's grid, ${median(dyx).toFixed(1)} px of 256 in-plane`,
);

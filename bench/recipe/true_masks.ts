/**
 * @file An oracle segmentor for the classifier's recipe study: writes every cached study's TRUE mask as its
 * segmentation prediction (seg_pred.raw on the [::2] slice grid and seg_meta.json, as `deno task train
 * predict-seg` writes them), so that `train cls` cuts its crops where the vertebrae really are, as
 * `bench/recipe/cls.py` does. Separates what the classifier learns from what the segmentor's crops cost.
 *   deno run -A bench/recipe/true_masks.ts --cache out/dev31t/cache
 * Every study must have a mask (synth --mask-fraction 1); a cache written this way is for experiments only.
 * The phantoms' true masks show each break as a gap, which the crops' mask channel then carries: a classifier
 * trained on them learns the gap (docs/recipe.md, "What the true masks gave away"). Run this on the cache of
 * a `twin_masks.ts` copy, whose masks have the gaps filled, to see what the classifier learns from the image.
 */
import { readCube, readHeader } from "../../data/mod.ts";
import { computeMeta, writeSegPrediction } from "../../infer/meta.ts";
import { cacheFlags } from "./cache_flags.ts";

const SPECS = {
  cache: { type: "string", help: "the preprocessing cache (every study with mask_256)" },
} as const;
const f = cacheFlags("true_masks.ts", SPECS);
const cache = f.cache as string;
let n = 0;
for (const e of [...Deno.readDirSync(cache)].filter((e) => e.isDirectory)) {
  const header = await readHeader(cache, e.name);
  if (!header.cubes.mask_256) {
    throw new Error(`${cache}/${e.name}: no mask_256 (write the phantoms with --mask-fraction 1)`);
  }
  // Slices 0, 2, 4, ...: the grid predict-seg writes its predictions on.
  const { data, shape } = await readCube(cache, e.name, "mask_256", { zStep: 2 });
  const labels = data as Uint8Array;
  // T1 and T2 (8, 9) are background to the segmentor, as in the seed.
  for (let i = 0; i < labels.length; i++) if (labels[i] > 7) labels[i] = 0;
  const meta = computeMeta(labels, shape, { mean: header.mean, std: header.std });
  await writeSegPrediction(cache, e.name, labels, shape, meta, ["true mask (bench/recipe/true_masks.ts)"]);
  n++;
}
console.log(`${n} studies: true masks written as predictions in ${cache}`);

/**
 * @file Fracture maps of a synthetic dataset, for the classifier's localisation-loss study (docs/recipe.md,
 * "A fracture-map loss for the dense CNN"): for every positive study of `deno task synth --seed S --studies N`,
 * the voxels where its rendering and its intact twin's (same patient and noise, `fractures: false`) differ
 * by more than --hu HU, with the fractured level as value (0 elsewhere), on the study's own grid [Z, Y, X],
 * slice 0 most cranial (the cache's order). Replays writeSyntheticDataset's draws to find each study's seed
 * and checks every uid against the dataset's train.csv.
 *   deno run -A bench/recipe/fracmaps.ts --data out/dev31/data --seed 31 --out out/dev31/fmap
 * Writes <uid>.bin (u8 [Z, Y, X]) and index.json ({uid: {shape, voxels, levels}}).
 */
import { phantomStudy, rng } from "../../data/synth.ts";
import { type Flags, parseFlags, usage, UsageError } from "../../cli/flags.ts";

const SPECS = {
  data: { type: "string", help: "the synthetic dataset (its train.csv is checked against the replay)" },
  seed: { type: "number", help: "the --seed it was written with" },
  size: { type: "number", default: 128, help: "its --size" },
  hu: { type: "number", default: 100, help: "threshold on |fractured - intact|, HU" },
  out: { type: "string", help: "output folder" },
} as const;
let f: Flags;
try {
  f = parseFlags(Deno.args, SPECS);
  if (f.data === undefined || f.seed === undefined || f.out === undefined) {
    throw new UsageError("--data, --seed and --out are required");
  }
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  console.error(`bench/recipe/fracmaps.ts: ${e.message}`);
  Deno.exit(2);
}
if (f.help) {
  console.log(usage("deno run -A bench/recipe/fracmaps.ts", SPECS));
  Deno.exit(0);
}
const data = f.data as string, out = f.out as string, size = f.size as number, hu = f.hu as number;
const rows = Deno.readTextFileSync(`${data}/train.csv`).trim().split("\n").slice(1).map((l) => l.split(","));
Deno.mkdirSync(out, { recursive: true });

/** writeSyntheticDataset's uid draw (data/synth.ts). */
function drawUid(r: () => number): string {
  let s = "1.2.826.0.1.3680043.10.1378.";
  for (let k = 0; k < 3; k++) s += `${Math.floor(r() * 1e9)}.`;
  return s.slice(0, -1);
}

const r = rng(f.seed as number);
const index: Record<string, { shape: number[]; voxels: number; levels: number[] }> = {};
const t0 = performance.now();
for (const [k, row] of rows.entries()) {
  const uid = drawUid(r);
  drawUid(r); // series uid
  const seed = Math.floor(r() * 2 ** 31);
  for (let i = 0; i < 5; i++) r(); // jpeg, names, shift, z0, mask
  if (uid !== row[0]) throw new Error(`study ${k}: replayed uid ${uid} is not train.csv's ${row[0]}`);
  if (row[1] !== "1") continue;
  const st = phantomStudy(seed, size);
  const twin = phantomStudy(seed, size, { fractures: false });
  const map = new Uint8Array(st.hu.length);
  let voxels = 0;
  for (let i = 0; i < map.length; i++) {
    if (Math.abs(st.hu[i] - twin.hu[i]) > hu) {
      // the level the voxel belongs to in either rendering (a break's gap is soft tissue in the fractured one)
      map[i] = st.labels[i] || twin.labels[i] || 255;
      voxels++;
    }
  }
  Deno.writeFileSync(`${out}/${uid}.bin`, map);
  index[uid] = { shape: st.shape, voxels, levels: st.fractures.map((x) => x.level) };
  if (k % 40 === 0) console.log(`study ${k}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}
Deno.writeTextFileSync(`${out}/index.json`, JSON.stringify(index));
console.log(`${Object.keys(index).length} positive studies' maps in ${out}`);

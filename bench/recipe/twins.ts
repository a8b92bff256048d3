/**
 * @file Fractured / intact-twin crop pairs for the classifier's learnability study (docs/recipe.md,
 * "Fractured and intact twins"); `bench/recipe/twins.py` trains on them.
 *   deno run -A bench/recipe/twins.ts --size 128 --variants 2:64,1:64 --out out/twins/s128   (s128z2h64, s128z1h64)
 * For seeds 880000.. (train: first --ntrain, val: next --nval), positives only, every fractured level:
 * the classifier crop (label box, in-plane margin 16*size/256, z-step, area-resampled to [16, hw, hw],
 * z-scored with the FRACTURED study's HU mean/std) of the fractured rendering (label 1) and of its intact
 * twin (label 0), both cut with the fractured study's mask box; the mask channel (level L, 0/1, resampled,
 * thresholded at 0.5) is the fractured study's for both, so the image is the only difference in a pair.
 * Writes img.bin (f32 [N, 16, hw, hw]), mask.bin (u8 [N, 16, hw, hw]), index.json.
 */
import { phantomStudy } from "../../data/synth.ts";
import { labelBoxes, resampleArea } from "../../data/crops.ts";
import { type Flags, parseFlags, usage, UsageError } from "../../cli/flags.ts";

const SPECS = {
  size: { type: "number", default: 128, help: "phantom in-plane size in pixels" },
  variants: { type: "string", default: "2:64", help: "crop variants z-step:in-plane size, comma-separated" },
  ntrain: { type: "number", default: 160, help: "training seeds" },
  nval: { type: "number", default: 60, help: "validation seeds, after the training ones" },
  seed0: { type: "number", default: 880000, help: "first seed (development seeds only)" },
  out: { type: "string", help: "output prefix (default out/twins/s<size>; z<step>h<size> appended)" },
} as const;
let f: Flags;
try {
  f = parseFlags(Deno.args, SPECS);
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  console.error(`bench/recipe/twins.ts: ${e.message}`);
  Deno.exit(2);
}
if (f.help) {
  console.log(usage("deno run -A bench/recipe/twins.ts", SPECS));
  Deno.exit(0);
}
const size = f.size as number, D = 16;
const variants = (f.variants as string).split(",").map((v) => v.split(":").map(Number) as [number, number]);
const ntrain = f.ntrain as number, nval = f.nval as number, seed0 = f.seed0 as number;
const outRoot = (f.out as string | undefined) ?? `out/twins/s${size}`;
const outs = [];
for (const [zstep, hw] of variants) {
  const out = `${outRoot}z${zstep}h${hw}`;
  Deno.mkdirSync(out, { recursive: true });
  outs.push({
    zstep,
    hw,
    out,
    nBreakSmall: 0,
    index: [] as Record<string, unknown>[],
    imgF: await Deno.open(`${out}/img.bin`, { write: true, create: true, truncate: true }),
    mskF: await Deno.open(`${out}/mask.bin`, { write: true, create: true, truncate: true }),
  });
}
const t0 = performance.now();

function cut(
  zstep: number,
  vol: ArrayLike<number>,
  shape: number[],
  b: { z0: number; z1: number; y0: number; y1: number; x0: number; x1: number },
) {
  const [, Y, X] = shape;
  const zs: number[] = [];
  for (let z = b.z0; z < b.z1; z += zstep) zs.push(z);
  const ny = b.y1 - b.y0, nx = b.x1 - b.x0;
  const o = new Float32Array(zs.length * ny * nx);
  let i = 0;
  for (const z of zs) {
    for (let y = b.y0; y < b.y1; y++) for (let x = b.x0; x < b.x1; x++) o[i++] = vol[(z * Y + y) * X + x];
  }
  return { data: o, shape: [zs.length, ny, nx] };
}

for (let k = 0; k < ntrain + nval; k++) {
  const seed = seed0 + k;
  const split = k < ntrain ? "train" : "val";
  const f = phantomStudy(seed, size, { positiveFraction: 1 });
  const t = phantomStudy(seed, size, { positiveFraction: 1, fractures: false });
  if (f.fractures.length === 0) {
    console.log(`seed ${seed}: no fractures, skipped`);
    continue;
  }
  const shape = f.shape as number[];
  const n = f.hu.length;
  let s = 0, s2 = 0;
  for (let i = 0; i < n; i++) s += f.hu[i];
  const mean = s / n;
  for (let i = 0; i < n; i++) s2 += (f.hu[i] - mean) ** 2;
  const std = Math.sqrt(s2 / n);
  const boxes = labelBoxes(f.labels, shape);
  const m = Math.round((16 * size) / 256);
  // one entry per fractured level (several fractures of one level: the first's fields, count noted)
  const levels = [...new Set(f.fractures.map((fr) => fr.level))];
  for (const L of levels) {
    const b0 = boxes.get(L);
    if (!b0) {
      console.log(`seed ${seed} C${L}: absent from the mask, skipped`);
      continue;
    }
    const b = {
      z0: b0.z0,
      z1: b0.z1,
      y0: Math.max(0, b0.y0 - m),
      y1: Math.min(shape[1], b0.y1 + m),
      x0: Math.max(0, b0.x0 - m),
      x1: Math.min(shape[2], b0.x1 + m),
    };
    const lm = new Uint8Array(f.labels.length);
    for (let i = 0; i < lm.length; i++) lm[i] = f.labels[i] === L ? 1 : 0;

    // the difference between the twins in the full-resolution box (all slices)
    let maxDiff = 0, nDiff = 0;
    const [, Y, X] = shape;
    for (let z = b.z0; z < b.z1; z++) {
      for (let y = b.y0; y < b.y1; y++) {
        for (let x = b.x0; x < b.x1; x++) {
          const i = (z * Y + y) * X + x, d = Math.abs(f.hu[i] - t.hu[i]);
          if (d > maxDiff) maxDiff = d;
          if (d > 100) nDiff++;
        }
      }
    }
    for (const V of outs) {
      const { zstep, hw, index, imgF, mskF } = V;
      const cf = cut(zstep, f.hu, shape, b), ct = cut(zstep, t.hu, shape, b), cm = cut(zstep, lm, shape, b);
      let maxDiffCrop = 0;
      for (let i = 0; i < cf.data.length; i++) {
        maxDiffCrop = Math.max(maxDiffCrop, Math.abs(cf.data[i] - ct.data[i]));
      }
      const outShape = [D, hw, hw];
      const rf = resampleArea(cf.data, cf.shape, outShape, { mean, std });
      const rt = resampleArea(ct.data, ct.shape, outShape, { mean, std });
      const rm = resampleArea(cm.data, cm.shape, outShape);
      const mb = new Uint8Array(rm.length);
      for (let i = 0; i < rm.length; i++) mb[i] = rm[i] >= 0.5 ? 1 : 0;
      let maxDiffOut = 0;
      for (let i = 0; i < rf.length; i++) maxDiffOut = Math.max(maxDiffOut, Math.abs(rf[i] - rt[i]) * std);
      const frs = f.fractures.filter((fr) => fr.level === L);
      const fr = frs[0];
      const shift = Math.hypot(...(fr.shift as unknown as number[]));
      const base = {
        seed,
        split,
        level: L,
        kind: fr.kind,
        part: fr.part,
        gap: fr.gap,
        shift,
        wedge: fr.wedge,
        nFractures: frs.length,
        kinds: frs.map((x) => x.kind),
        mean,
        std,
        box: b,
        srcShape: cf.shape,
        spacing: f.spacing,
        maxDiffHU: maxDiff,
        nVoxDiff100: nDiff,
        maxDiffCropHU: maxDiffCrop,
        maxDiffOutHU: maxDiffOut,
      };
      if (fr.kind === "break" && maxDiff <= 100) V.nBreakSmall++;
      for (const [lab, r] of [[1, rf], [0, rt]] as const) {
        await imgF.write(new Uint8Array(r.buffer));
        await mskF.write(mb);
        index.push({ ...base, label: lab, row: index.length });
      }
    }
  }
  if (k % 20 === 0) {
    console.log(
      `seed ${seed} ${split}: ${outs[0].index.length / 2} pairs, ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s`,
    );
  }
}
for (const { zstep, hw, out, nBreakSmall, index, imgF, mskF } of outs) {
  imgF.close();
  mskF.close();
  Deno.writeTextFileSync(
    `${out}/index.json`,
    JSON.stringify({ size, zstep, D, hw, pairs: index.length / 2, rows: index }),
  );
  const rows = index.filter((r) => r.label === 1);
  const cnt = (p: (r: Record<string, unknown>) => boolean) => rows.filter(p).length;
  console.log(
    `${out}: ${rows.length} pairs (train ${cnt((r) => r.split === "train")}, val ${
      cnt((r) => r.split === "val")
    }); ` +
      `breaks ${cnt((r) => r.kind === "break")}, compressions ${cnt((r) => r.kind === "compression")}; ` +
      `breaks with max |diff| <= 100 HU in the box: ${nBreakSmall}; ` +
      `pairs with crop max|diff| (after z-step) <= 100 HU: ${
        cnt((r) => (r.maxDiffCropHU as number) <= 100)
      }; ` +
      `after resampling <= 100 HU: ${cnt((r) => (r.maxDiffOutHU as number) <= 100)}; ` +
      `${((performance.now() - t0) / 1000).toFixed(0)} s`,
  );
}

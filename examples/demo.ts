/**
 * The default job, end to end on built-in synthetic data: writes phantom CT studies in the RSNA layout
 * (DICOM + NIfTI + train.csv), runs the seed's preprocessing into the cache, cuts one crop per vertebra
 * from the cache using the masks, trains a tiny CSN classifier (ir-CSN-26, width 8) to tell fractured
 * vertebrae from intact ones with AdamW + cosine, evaluates it on held-out studies, and saves a checkpoint.
 * Nothing is downloaded.
 *
 *   deno task demo [--studies N] [--steps N] [--batch B] [--out DIR]
 */
import { F, io, keep, models, nn, noGrad, openDevice, optim, type Tensor, tensor, tidy } from "../mod.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { preprocessDataset } from "../data/preprocess.ts";
import { readCube, readHeader } from "../data/cache.ts";
import { listStudies, makeFolds } from "../data/rsna.ts";

function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : def;
}
const nStudies = Number(arg("studies", "40")),
  steps = Number(arg("steps", "300")),
  batch = Number(arg("batch", "8"));
const out = arg("out", "out/demo");
const [CD, CH, CW] = [16, 32, 32]; // crop size fed to the network

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
console.log(`writing ${nStudies} synthetic studies to ${out}/data ...`);
await Deno.remove(`${out}/data`, { recursive: true }).catch(() => {});
await writeSyntheticDataset({
  out: `${out}/data`,
  studies: nStudies,
  seed: 2026,
  size: 128,
  maskFraction: 1,
});
console.log(`preprocessing into ${out}/cache ... (${elapsed()})`);
await Deno.remove(`${out}/cache`, { recursive: true }).catch(() => {});
await preprocessDataset(`${out}/data`, `${out}/cache`, { workers: 2, full: false });

// One crop per vertebra: the mask's bounding box (+ margin) on the 256 grid, resampled to CDxCHxCW.
interface Crop {
  uid: string;
  vertebra: number;
  label: number;
  voxels: Float32Array;
}
const crops: Crop[] = [];
const studies = await listStudies(`${out}/data`);
for (const st of studies) {
  const h = await readHeader(`${out}/cache`, st.uid);
  const mask = await readCube(`${out}/cache`, st.uid, "mask_256");
  const [Z, Y, X] = mask.shape;
  for (let v = 1; v <= 7; v++) {
    let z0 = Z, z1 = 0, y0 = Y, y1 = 0, x0 = X, x1 = 0;
    for (let z = 0; z < Z; z++) {
      for (let y = 0; y < Y; y++) {
        for (let x = 0; x < X; x++) {
          if (mask.data[(z * Y + y) * X + x] !== v) continue;
          z0 = Math.min(z0, z), z1 = Math.max(z1, z + 1), y0 = Math.min(y0, y), y1 = Math.max(y1, y + 1);
          x0 = Math.min(x0, x), x1 = Math.max(x1, x + 1);
        }
      }
    }
    if (z1 <= z0) continue;
    const m = 8;
    const box = {
      z: [Math.max(0, z0 - 1), Math.min(Z, z1 + 1)] as [number, number],
      y: [Math.max(0, y0 - m), Math.min(Y, y1 + m)] as [number, number],
      x: [Math.max(0, x0 - m), Math.min(X, x1 + m)] as [number, number],
    };
    const img = await readCube(`${out}/cache`, st.uid, "image_256", box);
    const [nz, ny, nx] = img.shape;
    // Area resampling (mean of the source voxels in each target cell): a thin crack survives downscaling.
    const voxels = new Float32Array(CD * CH * CW);
    const span = (t: number, n: number, N: number): [number, number] => {
      const a = Math.floor((t * n) / N), b = Math.max(a + 1, Math.floor(((t + 1) * n) / N));
      return [Math.min(a, n - 1), Math.min(b, n)];
    };
    for (let z = 0; z < CD; z++) {
      const [za, zb] = span(z, nz, CD);
      for (let y = 0; y < CH; y++) {
        const [ya, yb] = span(y, ny, CH);
        for (let x = 0; x < CW; x++) {
          const [xa, xb] = span(x, nx, CW);
          let sum = 0;
          for (let k = za; k < zb; k++) {
            for (let j = ya; j < yb; j++) {
              for (let i = xa; i < xb; i++) sum += img.data[(k * ny + j) * nx + i];
            }
          }
          voxels[(z * CH + y) * CW + x] = (sum / ((zb - za) * (yb - ya) * (xb - xa)) - h.mean) / h.std;
        }
      }
    }
    crops.push({ uid: st.uid, vertebra: v, label: st.labels![v], voxels });
  }
}
const folds = makeFolds(studies.map((s) => ({ uid: s.uid, labels: s.labels! })), 4, 1);
const train = crops.filter((c) => folds.get(c.uid) !== 0), val = crops.filter((c) => folds.get(c.uid) === 0);
const pos = train.filter((c) => c.label), neg = train.filter((c) => !c.label);
console.log(
  `${crops.length} vertebra crops (${pos.length} fractured in training, ${val.length} held out) (${elapsed()})`,
);

const device = await openDevice();
console.log(`device: ${device.info.description}${device.info.isFallbackAdapter ? " (software)" : ""}`);
nn.seedInit(7);
const model = new models.CSNClassifier({
  device,
  encoder: "r26ir",
  baseChannels: 8,
  numClasses: 1,
  pool: "max",
  dropout: 0,
});
const named = model.namedParameters();
const opt = new optim.AdamW([
  { params: named.filter(([k]) => !k.includes("bias")).map(([, p]) => p) },
  { params: named.filter(([k]) => k.includes("bias")).map(([, p]) => p), weightDecay: 0 },
], { lr: 3e-3, weightDecay: 0.01 });
const sched = optim.cosineSchedule({ lrMax: 3e-3, etaMin: 1e-5, totalSteps: steps });
let seed = 11;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
const toBatch = (cs: Crop[]): [Tensor, Tensor] => {
  const xs = new Float32Array(cs.length * CD * CH * CW);
  cs.forEach((c, i) => xs.set(c.voxels, i * CD * CH * CW));
  return [
    tensor(xs, [cs.length, 1, CD, CH, CW], { device }),
    tensor(cs.map((c) => c.label), [cs.length, 1], { device }),
  ];
};
console.log(
  `training ir-CSN-26 (${
    model.parameters().reduce((p, t) => p + t.numel(), 0).toLocaleString("en-US")
  } parameters), batch ${batch}, ${steps} steps`,
);
let pending: Tensor[] = [];
const tTrain = performance.now();
for (let step = 0; step < steps; step++) {
  opt.lr = sched(step);
  opt.zeroGrad();
  // Balanced batches, as the seed's weighted sampler does.
  const cs = Array.from({ length: batch }, (_, i) => {
    const pool = i % 2 && pos.length ? pos : neg;
    return pool[Math.floor(rnd() * pool.length)];
  });
  pending.push(tidy(() => {
    const [x, y] = toBatch(cs);
    const loss = F.bceWithLogits(model.forward(x), y);
    loss.backward();
    optim.clipGradNorm(model.parameters(), 5).dispose();
    opt.step();
    return keep(loss);
  }));
  if ((step + 1) % 20 === 0 || step + 1 === steps) {
    let l = 0;
    for (const t of pending) (l += await t.item()), t.dispose();
    const sec = (performance.now() - tTrain) / 1000;
    console.log(
      `step ${step + 1}/${steps}  loss ${(l / pending.length).toFixed(4)}  ${
        ((step + 1) / sec).toFixed(2)
      } steps/s  ETA ${((sec / (step + 1)) * (steps - step - 1)).toFixed(0)} s`,
    );
    pending = [];
  }
}
model.eval();
const probs = await tidy(async () => {
  const [x] = toBatch(val);
  return Array.from(await noGrad(() => F.sigmoid(model.forward(x))).toArray());
});
const correct = val.filter((c, i) => (probs[i] > 0.5 ? 1 : 0) === c.label).length;
const tp = val.filter((c, i) => c.label && probs[i] > 0.5).length, posVal = val.filter((c) => c.label).length;
const tn = val.filter((c, i) => !c.label && probs[i] <= 0.5).length;
// Ranking quality does not depend on the threshold: the chance a fractured crop outranks an intact one.
let auc = 0;
const pIdx = val.map((c, i) => (c.label ? i : -1)).filter((i) => i >= 0),
  nIdx = val.map((c, i) => (c.label ? -1 : i)).filter((i) => i >= 0);
for (const a of pIdx) for (const b of nIdx) auc += probs[a] > probs[b] ? 1 : probs[a] === probs[b] ? 0.5 : 0;
auc /= Math.max(1, pIdx.length * nIdx.length);
console.log(
  `held-out vertebrae: fractured found ${tp}/${posVal}, intact kept ${tn}/${val.length - posVal}, ROC AUC ${
    auc.toFixed(3)
  }`,
);
const first = val[0]?.uid;
if (first) {
  const row = val.map((c, i) => [c, probs[i]] as const).filter(([c]) => c.uid === first);
  console.log(
    `study ${first}: ${
      row.map(([c, p]) => `C${c.vertebra} ${p.toFixed(2)}${c.label ? "*" : ""}`).join("  ")
    }  (* = fractured)`,
  );
}
const ckpt = `${out}/csn26_demo.safetensors`;
await io.saveCheckpoint(ckpt, model.stateDict(), {
  config: { encoder: "r26ir", baseChannels: 8, numClasses: 1, crop: [CD, CH, CW] },
  epoch: 1,
  metrics: { heldOutAccuracy: correct / Math.max(1, val.length), heldOutAuc: auc },
});
console.log(`done in ${elapsed()}; data in ${out}/data, cache in ${out}/cache, checkpoint ${ckpt}`);
model.dispose();
opt.dispose();
device.destroy();

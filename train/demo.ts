/**
 * The default job, end to end on built-in synthetic data: writes phantom CT studies in the RSNA layout
 * (DICOM + NIfTI + train.csv), runs the seed's preprocessing into the cache, cuts one crop per vertebra
 * from the cache using the masks, trains a tiny CSN classifier (ir-CSN-26, width 8) to tell fractured
 * vertebrae from intact ones with AdamW + cosine, evaluates it on held-out studies, and saves a checkpoint.
 * Nothing is downloaded.
 *
 *   deno task demo [--studies N] [--steps N] [--batch B] [--out DIR]
 */
import { F, keep, models, nn, noGrad, openDevice, optim, type Tensor, tensor, tidy } from "../mod.ts";
import {
  labelBoxes,
  listStudies,
  makeFolds,
  preprocessDataset,
  readCube,
  readHeader,
  resampleArea,
  writeSyntheticDataset,
} from "../data/mod.ts";
import { saveCheckpoint } from "../io/files.ts";

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
  const boxes = labelBoxes(mask.data, mask.shape);
  for (let v = 1; v <= 7; v++) {
    const b = boxes.get(v);
    if (!b) continue;
    const m = 8;
    const box = {
      z: [Math.max(0, b.z0 - 1), Math.min(Z, b.z1 + 1)] as [number, number],
      y: [Math.max(0, b.y0 - m), Math.min(Y, b.y1 + m)] as [number, number],
      x: [Math.max(0, b.x0 - m), Math.min(X, b.x1 + m)] as [number, number],
    };
    const img = await readCube(`${out}/cache`, st.uid, "image_256", box);
    // Area resampling keeps a thin crack visible after downscaling; z-scored with the study's statistics.
    const voxels = resampleArea(img.data, img.shape, [CD, CH, CW], { mean: h.mean, std: h.std });
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
await saveCheckpoint(ckpt, model.stateDict(), {
  config: { encoder: "r26ir", baseChannels: 8, numClasses: 1, crop: [CD, CH, CW] },
  epoch: 1,
  metrics: { heldOutAccuracy: correct / Math.max(1, val.length), heldOutAuc: auc },
});
console.log(`done in ${elapsed()}; data in ${out}/data, cache in ${out}/cache, checkpoint ${ckpt}`);
model.dispose();
opt.dispose();
device.destroy();

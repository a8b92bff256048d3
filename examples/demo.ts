/**
 * The default job: trains a tiny CSN classifier (ir-CSN, depth 26, width 8: the seed's classifier in
 * miniature) to tell synthetic vertebra-like volumes with a thin low-density crack from intact ones, with
 * AdamW + a per-step cosine schedule, then evaluates it on held-out volumes and saves a checkpoint.
 * Everything runs on the GPU engine; nothing is downloaded.
 *
 *   deno task demo [--steps N] [--batch B] [--out DIR]
 */
import { F, io, keep, models, noGrad, openDevice, optim, type Tensor, tensor, tidy } from "../mod.ts";

function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : def;
}
const steps = Number(arg("steps", "100")), batch = Number(arg("batch", "8"));
const outDir = arg("out", "out/demo");
const [D, H, W] = [16, 32, 32];

const device = await openDevice();
console.log(`device: ${device.info.description}${device.info.isFallbackAdapter ? " (software)" : ""}`);

// Synthetic volumes: a noisy ellipsoid with a dense shell; positives get a thin low-density plane.
let seed = 7;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
function volume(positive: boolean): Float32Array {
  const v = new Float32Array(D * H * W);
  const cz = D / 2 + (rnd() - 0.5) * 2, cy = H / 2 + (rnd() - 0.5) * 4, cx = W / 2 + (rnd() - 0.5) * 4;
  const r = 9 + rnd() * 3;
  const crack = Math.floor(cz - 3 + rnd() * 6);
  for (let z = 0; z < D; z++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const d = Math.hypot(x - cx, y - cy, (z - cz) * 1.6) / r;
        let val = d < 1 ? (d > 0.75 ? 1.5 : 0.6) : 0;
        if (positive && d < 1 && z === crack) val = -0.3;
        v[(z * H + y) * W + x] = val + (rnd() - 0.5) * 0.5;
      }
    }
  }
  return v;
}
function makeBatch(n: number): [Tensor, Tensor] {
  const xs = new Float32Array(n * D * H * W), ys = new Float32Array(n);
  for (let b = 0; b < n; b++) {
    const pos = b % 2 === 1;
    xs.set(volume(pos), b * D * H * W);
    ys[b] = pos ? 1 : 0;
  }
  return [tensor(xs, [n, 1, D, H, W], { device }), tensor(ys, [n, 1], { device })];
}

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
const nParams = model.parameters().reduce((p, t) => p + t.size, 0);
console.log(
  `training a ${nParams.toLocaleString("en-US")}-parameter ir-CSN-26 classifier on ${D}x${H}x${W} volumes, ` +
    `batch ${batch}, ${steps} steps`,
);

const t0 = performance.now();
let pending: Tensor[] = [];
for (let step = 0; step < steps; step++) {
  opt.lr = sched(step);
  opt.zeroGrad();
  pending.push(tidy(() => {
    const [x, y] = makeBatch(batch);
    const loss = F.bceWithLogits(model.forward(x), y);
    loss.backward();
    optim.clipGradNorm(model.parameters(), 5).dispose();
    opt.step();
    return keep(loss);
  }));
  if ((step + 1) % 10 === 0 || step + 1 === steps) {
    // One readback per 10 steps: every CPU-GPU wait costs >= 11 ms in Deno.
    let l = 0;
    for (const t of pending) {
      l += await t.item();
      t.dispose();
    }
    const sec = (performance.now() - t0) / 1000;
    console.log(
      `step ${step + 1}/${steps}  loss ${(l / pending.length).toFixed(4)}  lr ${opt.lr.toExponential(2)}  ` +
        `${((step + 1) / sec).toFixed(2)} steps/s  ETA ${
          ((sec / (step + 1)) * (steps - step - 1)).toFixed(0)
        } s`,
    );
    pending = [];
  }
}

model.eval();
const acc = await tidy(async () => {
  const [x, y] = makeBatch(32);
  const pred = noGrad(() => F.gt(model.forward(x), 0));
  const ok = F.eq(F.cast(pred, "f32"), y);
  return await F.mean(F.cast(ok, "f32")).item();
});
await Deno.mkdir(outDir, { recursive: true });
const ckpt = `${outDir}/csn26_demo.safetensors`;
await io.saveCheckpoint(ckpt, model.stateDict(), {
  config: { encoder: "r26ir", baseChannels: 8, numClasses: 1 },
  epoch: 1,
  metrics: { accuracy: acc },
});
const s = device.stats();
console.log(
  `held-out accuracy ${(acc * 100).toFixed(1)} % on 32 volumes; ${
    ((performance.now() - t0) / 1000).toFixed(1)
  } s; ` +
    `GPU memory peak ${(s.peakBytes / 2 ** 20).toFixed(1)} MiB`,
);
console.log(`checkpoint written to ${ckpt}`);
model.dispose();
opt.dispose();
device.destroy();

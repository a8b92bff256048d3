/**
 * The default job until the CSN models land: trains a small network on synthetic CT-like volumes (a bright
 * "vertebra" blob with or without a dark crack) for a few hundred steps, printing loss, accuracy and
 * throughput. Everything runs on the GPU engine; nothing is downloaded.
 *
 *   deno task demo [--steps N] [--batch B] [--size S]
 */
import { F, keep, noGrad, openDevice, randn, type Tensor, tensor, tidy, zeros } from "../mod.ts";

function arg(name: string, def: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}
const steps = arg("steps", 300), batch = arg("batch", 32), size = arg("size", 12);
const vox = size * size * size;

const device = await openDevice();
console.log(`device: ${device.info.description}${device.info.isFallbackAdapter ? " (software)" : ""}`);

// Synthetic volumes: a noisy ellipsoid; positives carry a thin low-density plane through it.
let seed = 1;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
function volume(positive: boolean): Float32Array {
  const v = new Float32Array(vox);
  const c = size / 2 + (rnd() - 0.5) * 2, r = size * (0.3 + rnd() * 0.1);
  const crack = Math.floor(size * (0.35 + rnd() * 0.3));
  for (let z = 0; z < size; z++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const d = Math.hypot(x - c, y - c, (z - c) * 1.3) / r;
        let val = d < 1 ? (d > 0.75 ? 1.5 : 0.6) : 0;
        if (positive && d < 1 && z === crack) val = -0.2;
        v[(z * size + y) * size + x] = val + (rnd() - 0.5) * 0.4;
      }
    }
  }
  return v;
}
function makeBatch(): [Tensor, Tensor] {
  const xs = new Float32Array(batch * vox), ys = new Float32Array(batch * 2);
  for (let b = 0; b < batch; b++) {
    const pos = rnd() < 0.5;
    xs.set(volume(pos), b * vox);
    ys[b * 2 + (pos ? 1 : 0)] = 1;
  }
  return [tensor(xs, [batch, vox], { device }), tensor(ys, [batch, 2], { device })];
}

const hidden = 64;
const params = [
  keep(randn([vox, hidden], { device, seed: 1, std: Math.sqrt(2 / vox) }).requireGrad()),
  keep(zeros([hidden], { device }).requireGrad()),
  keep(randn([hidden, 2], { device, seed: 2, std: Math.sqrt(2 / hidden) }).requireGrad()),
  keep(zeros([2], { device }).requireGrad()),
];
const lr = 0.05;
const flopsPerStep = 3 * 2 * batch * (vox * hidden + hidden * 2);

console.log(
  `training a ${vox}-${hidden}-2 MLP on ${size}^3 synthetic volumes, batch ${batch}, ${steps} steps`,
);
const t0 = performance.now();
let window: { loss: Tensor; acc: Tensor }[] = [];
for (let step = 1; step <= steps; step++) {
  const out = tidy(() => {
    const [x, y] = makeBatch();
    const h = F.relu(F.add(F.matmul(x, params[0]), params[1]));
    const logits = F.add(F.matmul(h, params[2]), params[3]);
    const loss = F.neg(F.mean(F.sum(F.mul(y, F.logSoftmax(logits, -1)), -1)));
    loss.backward();
    const acc = noGrad(() => F.mean(F.cast(F.eq(F.argmax(logits, -1), F.argmax(y, -1)), "f32")));
    noGrad(() => {
      for (let i = 0; i < params.length; i++) {
        const next = keep(F.sub(params[i], F.mul(params[i].grad!, lr)).requireGrad());
        params[i].dispose();
        params[i] = next;
      }
    });
    return { loss: keep(loss), acc: keep(acc) };
  });
  window.push(out);
  if (step % 50 === 0 || step === steps) {
    // One readback per 50 steps: every CPU-GPU wait costs >= 11 ms in Deno.
    let l = 0, a = 0;
    for (const w of window) {
      l += await w.loss.item();
      a += await w.acc.item();
      w.loss.dispose();
      w.acc.dispose();
    }
    const sec = (performance.now() - t0) / 1000;
    const eta = (sec / step) * (steps - step);
    console.log(
      `step ${step}/${steps}  loss ${(l / window.length).toFixed(4)}  acc ${
        (a / window.length).toFixed(3)
      }  ` +
        `${(step / sec).toFixed(1)} steps/s  ${((flopsPerStep * step) / sec / 1e9).toFixed(2)} GFLOP/s  ETA ${
          eta.toFixed(0)
        } s`,
    );
    window = [];
  }
}
const s = device.stats();
console.log(
  `done in ${((performance.now() - t0) / 1000).toFixed(1)} s; GPU memory live ${
    (s.liveBytes / 2 ** 20).toFixed(2)
  } MiB, ` +
    `peak ${(s.peakBytes / 2 ** 20).toFixed(2)} MiB; ${s.dispatches} dispatches in ${s.submits} submits`,
);
device.destroy();

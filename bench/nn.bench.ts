/**
 * Throughput of the fused AdamW step (parameters/s and GB/s: param, grad, m, v read + param, m, v written =
 * 28 bytes per parameter) and of batch norm forward+backward (GB/s against a minimum-traffic model: forward
 * reads x twice and writes y, backward reads x and g twice and writes gx), beside the adapter's measured
 * copy bandwidth.
 */
import { F, onesLike, openDevice, optim, randn, tidy } from "../mod.ts";
import { driverInfo, frac, measureCopyGBs, timePerCall } from "./measure.ts";

const device = await openDevice();
const copy = await measureCopyGBs(device);

const nParams = 8 * 2 ** 20;
const p = randn([nParams], { device, seed: 1 }).requireGrad();
p.grad = randn([nParams], { device, seed: 2 });
const opt = new optim.AdamW([p], { lr: 1e-3 });
opt.step();
const tAdam = await timePerCall(device, () => opt.step(), 4);

const x = randn([2, 256, 16, 32, 32], { device, seed: 3 }).requireGrad();
const w = randn([256], { device, seed: 4 }).requireGrad(),
  b = randn([256], { device, seed: 5 }).requireGrad();
const tBnF = await timePerCall(
  device,
  () => tidy(() => void F.batchNorm3d(x, w, b, null, null, { training: true })),
  3,
);
const tBnFB = await timePerCall(device, () =>
  tidy(() => {
    F.batchNorm3d(x, w, b, null, null, { training: true }).backward(onesLike(x));
    for (const t of [x, w, b]) {
      t.grad?.dispose();
      t.grad = null;
    }
  }), 3);
const bytes = x.numel() * 4;
console.log(`\n${driverInfo(device).label}: measured copy ${copy.toFixed(1)} GB/s`);
console.log(
  `AdamW step, ${nParams / 2 ** 20}M params: ${(tAdam * 1e3).toFixed(1)} ms, ${
    (nParams / tAdam / 1e9).toFixed(2)
  } G params/s, ` +
    `${frac((28 * nParams) / tAdam / 1e9, copy)} GB/s`,
);
console.log(
  `BatchNorm3d train fwd [2,256,16,32,32]: ${(tBnF * 1e3).toFixed(1)} ms, ${
    frac((3 * bytes) / tBnF / 1e9, copy)
  } GB/s`,
);
console.log(
  `BatchNorm3d train fwd+bwd: ${(tBnFB * 1e3).toFixed(1)} ms, ${
    frac((8 * bytes) / tBnFB / 1e9, copy)
  } GB/s\n`,
);

Deno.bench({ name: "AdamW step 8M params", n: 5, warmup: 1 }, async () => {
  opt.step();
  await device.sync();
});

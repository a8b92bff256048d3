/**
 * One forward+backward pass of a full-size model, printing its summary, time and GPU memory. Default: the
 * ir-CSN-152 classifier on a 1x3x40x256x256 crop (the seed's classifier input); it takes minutes on lavapipe.
 *
 *   deno task bench:model [--encoder r152ir|r152ip|r50ir] [--unet] [--shape 1,3,40,256,256] [--no-summary]
 *
 * With CSN_PROFILE=1 it also prints the top kernels of the forward+backward by GPU time (core/profiler.ts).
 */
import { F, models, openDevice, randn, tidy } from "../mod.ts";
import { driverInfo } from "./measure.ts";

const argv = Deno.args;
const opt = (k: string, d: string) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const unet = argv.includes("--unet");
const encoder = opt("--encoder", unet ? "r50ir" : "r152ir");
const shape = opt("--shape", unet ? "1,1,64,256,256" : "1,3,40,256,256").split(",").map(Number);

const device = await openDevice();
console.log(`device: ${driverInfo(device).label}`);
const model = unet ? new models.CSNUNet({ device, encoder }) : new models.CSNClassifier({ device, encoder });
const name = unet ? `CSN-UNet ${encoder}` : `CSN classifier ${encoder}`;
if (!argv.includes("--no-summary")) {
  const t0 = performance.now();
  const s = await models.summary(model, shape);
  console.log(s.table().split("\n").slice(-1)[0]);
  console.log(`summary forward (no grad) of [${shape}]: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
model.train();
await device.sync();
device.profiler?.reset();
const before = device.stats();
const t0 = performance.now();
const loss = await tidy(async () => {
  const x = randn(shape, { device, seed: 1 });
  const y = model.forward(x);
  const l = F.mean(F.mul(y, y));
  l.backward();
  return await l.item();
});
const sec = (performance.now() - t0) / 1000;
const st = device.stats();
const grads = model.parameters().filter((p) => p.grad).length;
console.log(
  `${name}: forward+backward of [${shape}] in ${sec.toFixed(1)} s (loss ${
    loss.toFixed(4)
  }, ${grads} parameter gradients); ` +
    `peak GPU memory ${(st.peakBytes / 2 ** 30).toFixed(2)} GiB (parameters ${
      (before.liveBytes / 2 ** 30).toFixed(2)
    } GiB), ` +
    `${st.dispatches - before.dispatches} dispatches`,
);
if (device.profiler) {
  console.log(`GPU time by kernel, forward+backward (CSN_PROFILE=1):\n${await device.profiler.report(10)}`);
}
model.dispose();
device.destroy();

/**
 * Dispatches per training step (or, with `--infer`, per inference forward), by op: what a GPU user pays in
 * launches and passes whatever the device.
 * The step is forward, mean(y^2), backward, AdamW (the second step, so AdamW's state exists; under `--amp`
 * with autocast and the GradScaler's scaled loss and unscale, as the trainer runs it), recorded with
 * the GPU work skipped: `Device.dispatch` is replaced by a counter, so no kernel is compiled or run and the
 * seed's full input sizes count in seconds on any machine (lavapipe's 2 GiB buffer limit still bounds the
 * batch, since the tensors are allocated). The count grows a little with the batch through the K splits.
 *
 *   deno run -A bench/dispatches.ts [--model cls|unet] [--batch N] [--amp] [--profile gpu|cpu] [--top 12]
 *                                   [--infer]
 *
 * `--infer`: an eval-mode forward under noGrad, as inference runs it, with the batch norms as they are and
 * then folded into their convs (`models.fuseConvBn`, what inference loads).
 *
 * Defaults: the ir-CSN-152 classifier on 8x3x40x256x256, or the ir-CSN-50 UNet on 2x1x64x256x256 (the seed's
 * crops and windows), with the "gpu" kernel profile.
 *
 * It also times the JavaScript that records a step (`--reps` more steps, median): the host's share of a GPU
 * step, spent before the GPU can run the dispatches it records (WebGPU's own encoding not included).
 */
import { autocast, F, models, noGrad, openDevice, optim, randn, tidy } from "../mod.ts";
import { type Flags, parseFlags, usage, UsageError } from "../cli/flags.ts";

const SPECS = {
  model: { type: "string", default: "cls", help: "cls (ir-CSN-152 classifier) or unet (ir-CSN-50 UNet)" },
  batch: { type: "number", help: "batch (default 8 for cls, 2 for unet)" },
  amp: { type: "boolean", default: false, help: "under autocast (f16)" },
  profile: { type: "string", default: "gpu", help: "kernel profile: gpu or cpu" },
  top: { type: "number", default: 12, help: "ops listed" },
  infer: { type: "boolean", default: false, help: "an inference forward, unfolded and folded norms" },
  reps: { type: "number", default: 20, help: "further steps timed for the JavaScript per step (median)" },
} as const;
let f: Flags;
try {
  f = parseFlags(Deno.args, SPECS);
  if (f.model !== "cls" && f.model !== "unet") {
    throw new UsageError(`--model must be cls or unet, not ${f.model}`);
  }
  if (f.profile !== "gpu" && f.profile !== "cpu") throw new UsageError(`--profile must be gpu or cpu`);
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  console.error(`bench/dispatches.ts: ${e.message}`);
  Deno.exit(2);
}
if (f.help) {
  console.log(usage("deno run -A bench/dispatches.ts", SPECS));
  Deno.exit(0);
}
const unet = f.model === "unet";
const batch = (f.batch as number | undefined) ?? (unet ? 2 : 8);
const shape = unet ? [batch, 1, 64, 256, 256] : [batch, 3, 40, 256, 256];

const device = await openDevice({ profile: f.profile as "gpu" | "cpu" });
const model = unet
  ? new models.CSNUNet({ device, encoder: "r50ir" })
  : new models.CSNClassifier({ device, encoder: "r152ir" });
model.train(!f.infer);
const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
await device.sync();

const counts = new Map<string, number>();
// The counter stands in for the dispatch: the kernels' outputs stay unwritten, which a count does not read.
device.dispatch = (name: string) => void counts.set(name, (counts.get(name) ?? 0) + 1);
// Under --amp, as train/trainer.ts runs it: autocast forward, scaled loss, GradScaler.unscale, step.
const scaler = f.amp ? new optim.GradScaler() : null;
const step = () => {
  tidy(() => {
    const run = () => {
      const y = model.forward(randn(shape, { device, seed: 1 }));
      return F.mean(F.mul(y, y));
    };
    const loss = scaler ? autocast(run) : run();
    (scaler ? scaler.scaleLoss(loss) : loss).backward();
    scaler?.unscale(model.parameters(), loss).dispose();
  });
  opt.step();
  opt.zeroGrad();
};
const forward = () => {
  const run = () => noGrad(() => tidy(() => void model.forward(randn(shape, { device, seed: 1 }))));
  f.amp ? autocast(run) : run();
};
const name = unet ? "ir-CSN-50 UNet" : "ir-CSN-152 classifier";
// Buffers are still allocated and freed as in a real step, so the pool's high-water mark is the step's memory.
let live0 = 0;
const start = () => {
  counts.clear();
  device.pool.resetPeak();
  live0 = device.pool.stats().liveBytes;
};
const report = (what: string) => {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const peak = (device.pool.stats().peakBytes - live0) / 2 ** 20;
  console.log(
    `${name}, [${shape}], ${
      f.amp ? "autocast f16" : "f32"
    }, profile ${f.profile}: ${total} dispatches ${what}; ` +
      `peak memory above the parameters${f.infer ? "" : ", AdamW state"}: ${peak.toFixed(0)} MiB`,
  );
  for (const [op, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, f.top as number)) {
    console.log(`  ${String(n).padStart(5)}  ${op}`);
  }
  counts.clear();
};
if (f.infer) {
  forward();
  start();
  forward();
  report("an inference forward (norms unfolded)");
  models.fuseConvBn(model);
  // Once, as the first study does: under autocast it casts the new weights, which later forwards reuse.
  forward();
  start();
  forward();
  report("an inference forward (norms folded into the convs)");
} else {
  step();
  start();
  step();
  report("a step");
}
// The JavaScript of recording, median of `reps` (the VM's neighbours move single runs).
const times: number[] = [];
for (let i = 0; i < (f.reps as number); i++) {
  const t0 = performance.now();
  f.infer ? forward() : step();
  times.push(performance.now() - t0);
  counts.clear();
}
if (times.length) {
  const ms = times.sort((a, b) => a - b)[times.length >> 1];
  console.log(
    `JavaScript to record ${f.infer ? "the folded forward" : "a step"}: ${
      ms.toFixed(1)
    } ms (median of ${times.length})`,
  );
}
model.dispose();

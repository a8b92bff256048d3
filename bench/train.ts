/**
 * Training throughput of a stage: a few optimizer steps of a preset through the real harness (loader
 * Workers reading the phantom cache, augmentation, AdamW, checkpoints off), printing samples/s after the
 * first (compiling) step and the share of time the device waited for data. The classifier stage needs the
 * phantoms' predicted masks (`deno task train predict-seg`, or `train all`).
 *
 *   deno task bench:train [--stage seg|cls] [--preset tiny|seed] [--steps N] [--batch B] [--workers N]
 *
 * With CSN_PROFILE=1 it also prints the top kernels of the last step by GPU time (core/profiler.ts), 10 of
 * them or CSN_PROFILE_TOP.
 */
import { openDevice } from "../mod.ts";
import { driverInfo } from "./measure.ts";
import { parseFlags } from "../cli/flags.ts";
import { RunFolder } from "../train/run_folder.ts";
import { train } from "../train/trainer.ts";
import { CLS_SEED, CLS_TINY, type ClsConfig, SEG_PRESETS, type SegConfig } from "../train/presets.ts";
import { buildSegModel, segStudies, segTask } from "../train/seg.ts";
import { buildClsModel, clsStudies, clsTask } from "../train/cls.ts";
import { ensureCache, PHANTOMS } from "../train/dataset.ts";
import type { TrainTask } from "../train/trainer.ts";

const f = parseFlags(Deno.args, {
  stage: { type: "string", default: "seg", help: "" },
  preset: { type: "string", default: "tiny", help: "" },
  steps: { type: "number", default: 6, help: "" },
  batch: { type: "number", help: "" },
  workers: { type: "number", default: 2, help: "" },
  width: { type: "number", help: "encoder base channels (preset)" },
  decoder: { type: "string", help: "seg decoder filters, 4 comma-separated (preset)" },
  last: { type: "number", help: "seg last block channels (preset)" },
  slices: { type: "number", help: "seg window slices (preset)" },
  size: { type: "number", help: "seg in-plane size (preset)" },
});
const { cache } = await ensureCache({ workers: 2 });
const device = await openDevice();
const dir = await Deno.makeTempDir({ prefix: "csn-bench-train-" });
const run = await RunFolder.open(dir, {}, false);
let c: SegConfig | ClsConfig, task: TrainTask<never>, model: { dispose(): void }, what: string;
if (f.stage === "cls") {
  const cc: ClsConfig = { ...(f.preset === "seed" ? CLS_SEED.ir : CLS_TINY) };
  if (f.batch) cc.batch = f.batch as number;
  const { studies, noPrediction } = await clsStudies(cache, `${PHANTOMS.dir}/train.csv`);
  if (!studies.length) {
    console.error(
      `bench:train: none of the ${noPrediction.length} studies in ${cache} has a predicted mask; run ` +
        `deno task train predict-seg --cache ${cache} --weights <a segmentor run> first`,
    );
    Deno.exit(1);
  }
  const m = buildClsModel(device, cc);
  task = clsTask({ device, model: m, cache, train: studies, val: [], config: cc }) as TrainTask<never>;
  model = m, c = cc;
  what = `cls ${cc.encoder} width ${cc.baseChannels}, 3x${cc.crop[0]}x${cc.crop[1]}x${cc.crop[1]}`;
} else {
  const sc: SegConfig = { ...SEG_PRESETS[f.preset as string] };
  if (f.batch) sc.batch = f.batch as number;
  if (f.width) sc.baseChannels = f.width as number;
  if (f.decoder) sc.decoderFilters = String(f.decoder).split(",").map(Number) as SegConfig["decoderFilters"];
  if (f.last) sc.lastChannels = f.last as number;
  if (f.slices) sc.slices = f.slices as number;
  if (f.size) sc.size = f.size as number;
  const studies = await segStudies(cache);
  const m = buildSegModel(device, sc);
  task = segTask({ device, model: m, cache, train: studies, val: [], config: sc }) as TrainTask<never>;
  model = m, c = sc;
  what = `seg ${sc.encoder} width ${sc.baseChannels}, ${sc.slices}x${sc.size}x${sc.size}`;
}
const steps = f.steps as number;
let lossCalls = 0;
if (device.profiler) {
  // Profile the last step only: the first ones also pay lavapipe's JIT on first dispatch.
  const loss = task.loss.bind(task);
  task.loss = (b) => {
    if (++lossCalls === steps) device.profiler!.reset();
    return loss(b);
  };
}
const saveEvery = 1e9;
const t0 = performance.now();
await train(task, run, {
  epochs: 1,
  batch: c.batch,
  lr: c.lr,
  etaMin: c.etaMin,
  weightDecay: c.weightDecay,
  clip: c.clip,
  maxSteps: steps,
  seed: 0,
  keep: 0,
  logEvery: 1,
  saveEvery,
  workers: f.workers as number,
  prefetch: 2,
  resume: false,
  config: {},
}).catch((e) => {
  if (!String(e).includes("do not fill")) throw e;
});
const recs = run.records().filter((
  r,
): r is { step: number; samplesPerSec: number; dataWait: number } & never =>
  "samplesPerSec" in r
) as unknown as { step: number; samplesPerSec: number; dataWait: number }[];
const warm = recs.slice(1);
const rate = warm.length ? warm.length / warm.reduce((s, r) => s + 1 / r.samplesPerSec, 0) : NaN;
const wait = warm.length ? warm.reduce((s, r) => s + r.dataWait, 0) / warm.length : NaN;
console.log(
  `${what} training, preset ${f.preset}, batch ${c.batch}, ` +
    `on ${driverInfo(device).label}: ${rate.toFixed(3)} samples/s (${
      (c.batch / rate).toFixed(2)
    } s/step) over steps 2..${recs.length}, ` +
    `first step ${(c.batch / recs[0].samplesPerSec).toFixed(1)} s (compiles), data wait ${
      (100 * wait).toFixed(1)
    }%, ` +
    `peak GPU memory ${(device.stats().peakBytes / 2 ** 30).toFixed(2)} GiB, total ${
      ((performance.now() - t0) / 1000).toFixed(0)
    } s`,
);
if (device.profiler) {
  const which = lossCalls >= steps ? `step ${steps}` : `all ${lossCalls} steps`;
  const top = Number(Deno.env.get("CSN_PROFILE_TOP") ?? 10);
  console.log(`GPU time by kernel, ${which} (CSN_PROFILE=1):\n${await device.profiler.report(top)}`);
}
model.dispose();
device.destroy();
await Deno.remove(dir, { recursive: true });

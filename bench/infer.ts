/**
 * Seconds per study of `deno task infer` (wall clock) and the seconds of each step (read + preprocess,
 * segment, metadata, classify, write), for a preset's models with random weights (speed does not depend on
 * the weights):
 *
 *   deno task bench:infer [--preset tiny|seed] [--slices 300] [--size 512] [--studies 2] [--amp]
 *                         [--results FILE]
 *
 * `seed` = the ir-CSN-50 UNet + one ir-CSN-152 classifier on 3x40x256x256 crops; the study is a phantom
 * resampled to `--slices` slices of `--size`^2 (the default: a 300-slice 512x512 study, minutes on lavapipe).
 */
import { autocast, models, nn, openDevice } from "../mod.ts";
import { saveCheckpoint } from "../io/files.ts";
import { benchmarkRequested } from "../core/tuner.ts";
import { phantomStudy } from "../data/synth.ts";
import { writeCtSlice } from "../data/dicom_write.ts";
import { parseFlags } from "../cli/flags.ts";
import { INFER_DEFAULTS, runInference } from "../infer/pipeline.ts";
import { CLS_SEED, CLS_TINY, SEG_SEED, SEG_TINY } from "../train/presets.ts";
import { buildSegModel, segModelConfig } from "../train/seg.ts";
import { clsModelConfig } from "../train/cls.ts";

const f = parseFlags(Deno.args, {
  preset: { type: "string", default: "seed", help: "" },
  slices: { type: "number", default: 300, help: "" },
  size: { type: "number", default: 512, help: "" },
  studies: { type: "number", default: 2, help: "" },
  amp: { type: "boolean", default: false, help: "under autocast f16 (infer --amp)" },
  results: { type: "string", help: "append the figure as a JSON line to this file" },
});
const tmp = await Deno.makeTempDir({ prefix: "csn-bench-infer-" });
const seed = f.preset === "seed";
const segC = seed ? SEG_SEED : SEG_TINY, clsC = seed ? CLS_SEED.ir : CLS_TINY;
const device = await openDevice();
nn.seedInit(1);
const seg = buildSegModel(device, segC);
await saveCheckpoint(`${tmp}/seg.safetensors`, seg.stateDict(), { config: { model: segModelConfig(segC) } });
seg.dispose();
const cls = new models.CSNClassifier({
  device,
  encoder: clsC.encoder,
  baseChannels: clsC.baseChannels,
  numClasses: 8,
});
await saveCheckpoint(`${tmp}/cls.safetensors`, cls.stateDict(), { config: { model: clsModelConfig(clsC) } });
cls.dispose();
device.destroy();

// Phantom studies resampled (nearest) to the requested size.
const Zt = f.slices as number, S = f.size as number;
for (let s = 0; s < (f.studies as number); s++) {
  const st = phantomStudy(100 + s, S);
  const [Z, Y, X] = st.shape;
  const dir = `${tmp}/data/test_images/bench-${s}`;
  await Deno.mkdir(dir, { recursive: true });
  const dz = (st.spacing[0] * Z) / Zt;
  for (let z = 0; z < Zt; z++) {
    const src = Math.min(Z - 1, Math.floor((z * Z) / Zt));
    await Deno.writeFile(
      `${dir}/${z + 1}.dcm`,
      writeCtSlice({
        studyUid: `1.2.3.${s}`,
        seriesUid: `1.2.3.${s}.1`,
        sopUid: `1.2.3.${s}.1.${z + 1}`,
        patientId: `bench-${s}`,
        instanceNumber: z + 1,
        position: [0, 0, -z * dz],
        orientation: [1, 0, 0, 0, 1, 0],
        pixelSpacing: [st.spacing[1], st.spacing[2]],
        sliceThickness: dz,
        rows: Y,
        cols: X,
        pixels: st.hu.slice(src * Y * X, (src + 1) * Y * X),
        rescaleIntercept: 0,
        rescaleSlope: 1,
      }),
    );
  }
}
const t0 = performance.now();
const res = await autocast(() =>
  runInference({
    data: `${tmp}/data`,
    weights: `${tmp}/seg.safetensors,${tmp}/cls.safetensors`,
    out: `${tmp}/out`,
    ...INFER_DEFAULTS,
    resume: false,
    report: true,
    nifti: true,
  }), f.amp ? "f16" : null);
const total = (performance.now() - t0) / 1000;
for (const x of res.failed) console.log(`bench:infer: study ${x.uid} failed: ${x.error}`);
const lines = (await Deno.readTextFile(`${tmp}/out/predictions.jsonl`)).trim().split("\n").map((l) =>
  JSON.parse(l)
);
/** Mean seconds of each step over some studies' lines. */
const meanSteps = (ls: { timings?: Record<string, number> }[]) => {
  const m: Record<string, number> = {};
  for (const l of ls) {
    for (const [k, v] of Object.entries(l.timings ?? {})) m[k] = (m[k] ?? 0) + v / ls.length;
  }
  return m;
};
const steps = meanSteps(lines);
// A study's own time: its steps but the writing (which overlaps the next study). The first study also pays
// for compiling every pipeline; the later ones show the steady state a long run sees.
const own = lines.map((l) =>
  Object.entries(l.timings ?? {}).reduce((a, [k, v]) => a + (k === "write" ? 0 : v as number), 0)
);
// Under CSN_BENCHMARK=1 the first study also times every kernel variant, and the second study's segmentation
// queues behind the first one's classification trials, so the steady state starts at the third.
const tuned = benchmarkRequested();
const skip = tuned ? 2 : 1;
const warm = own.length > skip ? own.slice(skip).reduce((a, b) => a + b, 0) / (own.length - skip) : null;
// The steps of the later studies alone: the first one's include compiling.
const warmSteps = meanSteps(lines.slice(skip));
console.log(
  `infer, preset ${f.preset} (${segC.encoder} UNet at ${segC.size} + ${clsC.encoder} on 3x${clsC.crop[0]}x${
    clsC.crop[1]
  }^2), ` +
    `${lines.length} studies of ${Zt}x${S}x${S}: ${(total / lines.length).toFixed(1)} s/study wall clock; ` +
    `first study ${own[0].toFixed(1)} s (compiling the pipelines${tuned ? ", timing the variants" : ""}), ` +
    (warm === null ? "" : `studies ${skip + 1}.. ${warm.toFixed(1)} s each (read to classify); `) +
    `steps per study (the writing runs beside the next study's device work): ` +
    Object.entries(steps).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(", ") +
    (warm === null
      ? ""
      : `; studies ${skip + 1}..: ${
        Object.entries(warmSteps).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(", ")
      }`),
);
if (f.results) {
  const line = {
    date: new Date().toISOString(),
    part: "infer",
    preset: f.preset,
    precision: f.amp ? "f16" : "f32",
    // CSN_BENCHMARK=1: kernel variants timed during the first study; the warm figures from the third on.
    tuned,
    warmFromStudy: skip + 1,
    studies: lines.length,
    shape: [Zt, S, S],
    secondsPerStudy: total / lines.length,
    firstStudySeconds: own[0],
    warmSecondsPerStudy: warm,
    steps,
    warmSteps: warm === null ? null : warmSteps,
  };
  await Deno.writeTextFile(f.results as string, JSON.stringify(line) + "\n", { append: true });
}
await Deno.remove(tmp, { recursive: true });

/**
 * The main job on built-in data (README's first command): trains the whole pipeline on the phantoms
 * (`train all`, tiny preset: segmentor, masks, classifier, averaging), then runs `deno task infer` on a
 * held-out set of phantom studies the models never saw (each with its ground-truth mask), printing the
 * competition score beside the best constant prediction, the per-level dice of the predicted masks, and
 * where the masks and reports are. Rerunning skips what is done.
 *
 *   deno task main [--out out/pipeline] [--heldout 32]
 */
import { type Flags, parseFlags, usage } from "../cli/flags.ts";
import { runAll } from "./stages.ts";
import { PHANTOM_VERSION, writeSyntheticDataset } from "../data/synth.ts";
import { INFER_DEFAULTS, runInference } from "../infer/pipeline.ts";
import { summaryLine } from "../infer/evaluate.ts";
import { duration } from "../cli/progress.ts";

const FLAGS = {
  out: { type: "string", default: "out/pipeline", help: "the pipeline's run folders" },
  heldout: { type: "number", default: 32, help: "held-out phantom studies scored at the end" },
  "heldout-seed": { type: "number", default: 7777, help: "seed of the held-out phantoms (never tuned on)" },
  workers: { type: "number", default: 2, help: "preprocessing and loader Workers" },
} as const;
let f: Flags;
try {
  f = parseFlags(Deno.args, FLAGS);
} catch (e) {
  console.error(`main: ${(e as Error).message}`);
  Deno.exit(2);
}
if (f.help) {
  console.log(usage("deno task main: train the whole pipeline on phantoms, score held-out phantoms", FLAGS));
  Deno.exit(0);
}
const t0 = performance.now();
await runAll({ out: f.out, workers: f.workers, seed: 0, preset: "tiny" });
const held = "out/phantoms-heldout";
// Masks for every held-out study, so that the predicted vertebrae can be scored per level (dice).
const heldSeed = f["heldout-seed"] as number;
const spec = JSON.stringify({
  studies: f.heldout,
  seed: heldSeed,
  size: 128,
  maskFraction: 1,
  version: PHANTOM_VERSION,
});
if ((await Deno.readTextFile(`${held}/phantoms.json`).catch(() => "")) !== spec) {
  console.log(`main: writing ${f.heldout} held-out phantom studies to ${held}`);
  await Deno.remove(held, { recursive: true }).catch(() => {});
  await writeSyntheticDataset({
    out: held,
    studies: f.heldout as number,
    seed: heldSeed,
    size: 128,
    maskFraction: 1,
  });
  await Deno.writeTextFile(`${held}/phantoms.json`, spec);
}
const r = await runInference({
  data: held,
  weights: f.out as string,
  out: "out/infer",
  truth: `${held}/train.csv`,
  ...INFER_DEFAULTS,
  resume: false,
  report: true,
  nifti: true,
});
const judged = r.evaluation ? summaryLine(r.evaluation) : "not scored (no study was predicted)";
console.log(
  `main: done in ${duration((performance.now() - t0) / 1000)}; open out/infer/index.html for the reports, ` +
    `out/infer/<uid>/vertebrae.nii.gz for the masks`,
);
console.log(`main: held-out phantoms: ${judged}`);
if (r.failed.length) Deno.exitCode = 1;

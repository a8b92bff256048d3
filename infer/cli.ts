/**
 * `deno task infer (--data DIR | --study DIR) --weights SPEC --out DIR [flags]`: CT studies in, per-vertebra
 * fracture probabilities out (submission.csv, predictions.jsonl, per study vertebrae.nii.gz and report.html,
 * and index.html). `--help` lists the flags.
 */
import { type Flags, type FlagSpec, parseFlags, usage, UsageError } from "../cli/flags.ts";
import { INFER_DEFAULTS, runInference } from "./pipeline.ts";
import { DEFAULT_POSTPROCESS } from "./meta.ts";
import { autocast } from "../kernels/cast.ts";

const FLAGS: Record<string, FlagSpec> = {
  data: {
    type: "string",
    help: "dataset root (test_images/ or train_images/ of the RSNA layout, or a folder of studies)",
  },
  study: { type: "string", help: "one study folder of DICOM files (instead of --data)" },
  weights: {
    type: "string",
    help: "segmentor + classifier checkpoints or run folders, comma-separated, or a `train all` folder",
  },
  out: { type: "string", default: "out/infer", help: "output folder" },
  truth: {
    type: "string",
    help: "train.csv: also print and write (score.json) the competition score beside the best constant " +
      "prediction, and the per-level dice where ground-truth masks exist",
  },
  masks: {
    type: "string",
    help:
      "folder of ground-truth masks <uid>.nii for the dice (default: segmentations/ beside train_images/)",
  },
  "train-labels": {
    type: "string",
    help: "train.csv the classifier was trained on: its positive rates are the constant baseline (default: " +
      "the one a classifier run in --weights names, else the truth's own prevalence, an oracle)",
  },
  tta: {
    type: "string",
    default: INFER_DEFAULTS.tta,
    help: "test-time augmentation of the crops: none or flip",
  },
  "no-calibrate": {
    type: "boolean",
    default: false,
    help: "use the classifiers' raw probabilities, not the calibration `train calibrate` stored with them",
  },
  resume: { type: "boolean", default: false, help: "skip studies already written in --out" },
  window: {
    type: "number",
    default: INFER_DEFAULTS.window,
    help: "segmentation window along z ([::2] slices)",
  },
  overlap: {
    type: "number",
    default: INFER_DEFAULTS.overlap,
    help: "overlap of consecutive segmentation windows",
  },
  "all-components": {
    type: "boolean",
    default: false,
    help: "keep every voxel of the segmentation's argmax (the seed), not each level's largest connected part",
  },
  "no-report": { type: "boolean", default: false, help: "skip report.html pages" },
  "no-nifti": { type: "boolean", default: false, help: "skip vertebrae.nii.gz masks" },
  amp: {
    type: "boolean",
    default: false,
    help: "mixed precision: f16 convs and linears with f32 accumulation (needs shader-f16; f32 without)",
  },
};

/** Runs the command line; returns the exit code (set as `Deno.exitCode`, see train/cli.ts). */
export async function main(args: string[]): Promise<number> {
  let f: Flags;
  try {
    f = parseFlags(args, FLAGS);
  } catch (e) {
    console.error(`infer: ${(e as Error).message}`);
    return 2;
  }
  if (f.help) {
    console.log(usage("deno task infer: CT studies -> fracture probabilities, masks and reports", FLAGS));
    return 0;
  }
  try {
    if (!f.weights) throw new UsageError("--weights is required");
    if (!f.data && !f.study) throw new UsageError("give --data DIR or --study DIR");
    if (f.tta !== "none" && f.tta !== "flip") {
      throw new UsageError(`--tta must be none or flip, got ${f.tta}`);
    }
    const r = await autocast(() =>
      runInference({
        data: f.data as string | undefined,
        study: f.study as string | undefined,
        weights: f.weights as string,
        out: f.out as string,
        truth: f.truth as string | undefined,
        masks: f.masks as string | undefined,
        trainLabels: f["train-labels"] as string | undefined,
        tta: f.tta as "none" | "flip",
        calibrate: !f["no-calibrate"],
        resume: f.resume as boolean,
        window: f.window as number,
        overlap: f.overlap as number,
        postprocess: f["all-components"] ? "none" : DEFAULT_POSTPROCESS,
        report: !f["no-report"],
        nifti: !f["no-nifti"],
      }), f.amp ? "f16" : null);
    if (r.failed.length) {
      console.error(`infer: ${r.failed.length} of ${r.total} studies failed:`);
      for (const x of r.failed) console.error(`  ${x.uid}: ${x.error}`);
      return 1;
    }
    return 0;
  } catch (e) {
    console.error(`infer: ${e instanceof UsageError ? "" : "error: "}${(e as Error).message}`);
    return e instanceof UsageError ? 2 : 1;
  }
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);

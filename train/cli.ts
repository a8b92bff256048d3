/**
 * `deno task train <stage> [flags]`: the training pipeline's command line.
 *
 *   seg          train the CSN-UNet segmentor (seed-pipeline.md 2) into a run folder
 *   predict-seg  predict vertebra masks + metadata for every cached study (seed stage 3)
 *   cls          train a CSN classifier on vertebra crops (seed 4) into a run folder
 *   average      average a classifier run's best epochs (seed 4.8)
 *   calibrate    fit a classifier's calibration on its validation fold, stored in its checkpoint
 *   all          all of the above, resumable stage by stage
 *
 * `deno task train <stage> --help` lists the stage's flags with their defaults. With no --data and no
 * --cache, the built-in phantoms are written (once) under out/phantoms and used.
 */
import { type Flags, type FlagSpec, parseFlags, usage, UsageError } from "../cli/flags.ts";
import { Interrupted } from "./trainer.ts";
import { runAll, runAverage, runCalibrate, runCls, runPredictSeg, runSeg } from "./stages.ts";

const COMMON: Record<string, FlagSpec> = {
  data: {
    type: "string",
    help: "RSNA-layout dataset (train_images/, segmentations/, train.csv); default: phantoms",
  },
  cache: { type: "string", help: "preprocessing cache (default: out/cache/<dataset name>)" },
  workers: { type: "number", default: 2, help: "loader / preprocessing Workers" },
  seed: {
    type: "number",
    default: 0,
    help: "seed of everything random (init, order, augmentation, dropout)",
  },
};

const DEVICES: Record<string, FlagSpec> = {
  devices: {
    type: "string",
    help: "data parallelism: N replicas (or all adapters) under mpirun, the global --batch split over them " +
      "(default 1; under an external mpirun, its -n)",
  },
  "sync-bn": { type: "boolean", help: "synchronise batch norm across replicas (default: on when N > 1)" },
  "no-sync-bn": { type: "boolean", help: "batch norm per replica, on its share of the batch" },
};

const AMP: Record<string, FlagSpec> = {
  amp: {
    type: "boolean",
    help: "mixed precision: f16 convs and linears, f32 accumulation and master weights, dynamic loss " +
      "scaling (needs shader-f16; f32 with a warning without it); kept in the run config",
  },
};

const HARNESS: Record<string, FlagSpec> = {
  preset: {
    type: "string",
    default: "tiny",
    help: "tiny (CPU-sized) or seed (the solution's configuration)",
  },
  epochs: { type: "number", help: "epochs (preset)" },
  batch: { type: "number", help: "batch size (preset)" },
  lr: { type: "number", help: "peak learning rate (preset)" },
  warmup: { type: "number", help: "linear warm-up steps before the cosine (preset)" },
  multiplier: { type: "number", help: "times the train list is repeated per epoch (preset)" },
  "max-steps": {
    type: "number",
    default: 0,
    help: "stop after N optimizer steps in total, resumed ones included",
  },
  init: { type: "string", help: "initial weights (.pth from mmaction2 or .safetensors): fitting keys load" },
  resume: { type: "boolean", default: false, help: "continue the run in --out where it stopped" },
  keep: {
    type: "number",
    default: 5,
    help: "per-epoch checkpoints kept (the best by the validation metric)",
  },
  "log-every": { type: "number", default: 10, help: "log and print every N steps" },
  "save-every": { type: "number", default: 1, help: "save resume state every N steps (and each epoch end)" },
  prefetch: { type: "number", default: 2, help: "batches prepared ahead by the loader" },
  ...AMP,
  ...DEVICES,
};

const SEG_FLAGS: Record<string, FlagSpec> = {
  ...COMMON,
  ...HARNESS,
  out: { type: "string", default: "out/seg", help: "run folder" },
  fold: { type: "number", help: "validation fold of <cache>/seg_folds.csv (preset: 1)" },
  "no-augment": { type: "boolean", default: false, help: "turn the seed's augmentations off" },
};

/** How predict-seg cleans the masks (infer/meta.ts SegPostprocess). */
const ALL_COMPONENTS: Record<string, FlagSpec> = {
  "all-components": {
    type: "boolean",
    default: false,
    help: "keep every voxel of the masks' argmax (the seed), not each level's largest connected component",
  },
};

const PREDICT_FLAGS: Record<string, FlagSpec> = {
  ...COMMON,
  weights: {
    type: "string",
    help: "segmentor run folder(s) or checkpoint(s), comma-separated (an ensemble)",
  },
  window: { type: "number", default: 384, help: "sliding window along z ([::2] slices)" },
  overlap: { type: "number", default: 128, help: "overlap of consecutive windows" },
  force: {
    type: "boolean",
    default: false,
    help: "predict again studies already predicted with these weights",
  },
  ...ALL_COMPONENTS,
};

const CLS_FLAGS: Record<string, FlagSpec> = {
  ...COMMON,
  ...HARNESS,
  out: { type: "string", help: "run folder (default: out/cls-<encoder>-fold<fold>)" },
  encoder: {
    type: "string",
    help:
      "r152ir, r152ip, r50ir, r26ir, ... or plain (a plain 3-D CNN with a fracture-map loss; preset: seed r152ir, tiny r26ir)",
  },
  boxes: {
    type: "string",
    help:
      "train_bounding_boxes.csv for the plain CNN's fracture-map loss (default: <data>/train_bounding_boxes.csv if any)",
  },
  crop: { type: "string", help: "crop D,H,W fed to the model (preset: seed 40,256,256, tiny 16,64,64)" },
  fold: { type: "number", help: "validation fold of the folds file (preset: 0)" },
  folds: {
    type: "string",
    help: "folds file (StudyInstanceUID or cube_id, fold); default <cache>/folds.csv",
  },
  labels: { type: "string", help: "train.csv with the labels (default: <data>/train.csv)" },
  "seed-val-bug": {
    type: "boolean",
    default: false,
    help: "validation crops as the seed's bug 7.3 makes them",
  },
  "seed-visibility": {
    type: "boolean",
    default: false,
    help: "training labels' visibility rule as the seed codes it (7.4: crop voxels at the crop size)",
  },
};

const AVERAGE_FLAGS: Record<string, FlagSpec> = {
  run: { type: "string", help: "classifier run folder" },
  best: { type: "number", default: 5, help: "number of best epochs (lowest validation loss) to average" },
};

const CALIBRATE_FLAGS: Record<string, FlagSpec> = {
  run: { type: "string", help: "classifier run folder (its validation fold and training labels)" },
  weights: {
    type: "string",
    help: "the checkpoint to calibrate, rewritten with the calibration (default: the run's swa-best-N)",
  },
};

const ALL_FLAGS: Record<string, FlagSpec> = {
  ...COMMON,
  out: { type: "string", default: "out/pipeline", help: "folder of the stages' run folders" },
  preset: { type: "string", default: "tiny", help: "tiny (CPU-sized) or seed" },
  encoders: {
    type: "string",
    help: "classifier encoders, comma-separated (preset: seed r152ir,r152ip, tiny r26ir)",
  },
  "cls-folds": {
    type: "string",
    help: "classifier validation folds to train (preset: seed 0,1,2,3, tiny 0)",
  },
  labels: { type: "string", help: "train.csv (default: <data>/train.csv)" },
  ...ALL_COMPONENTS,
  ...AMP,
  ...DEVICES,
};

const STAGES: Record<
  string,
  { help: string; flags: Record<string, FlagSpec>; run: (f: Flags) => Promise<unknown> }
> = {
  seg: { help: "train the CSN-UNet segmentor", flags: SEG_FLAGS, run: runSeg },
  "predict-seg": {
    help: "predict masks and metadata for every cached study",
    flags: PREDICT_FLAGS,
    run: runPredictSeg,
  },
  cls: { help: "train a CSN classifier on vertebra crops", flags: CLS_FLAGS, run: runCls },
  average: { help: "average the best epochs of a classifier run", flags: AVERAGE_FLAGS, run: runAverage },
  calibrate: {
    help: "fit a classifier's calibration on its validation fold, stored in the checkpoint",
    flags: CALIBRATE_FLAGS,
    run: runCalibrate,
  },
  all: { help: "the whole training pipeline, resumable stage by stage", flags: ALL_FLAGS, run: runAll },
};

/**
 * Runs the command line; returns the exit code. Errors end the process through `Deno.exitCode` rather than
 * `Deno.exit()`, so that the WebGPU device is torn down before the process exits (an immediate exit right
 * after destroying a lavapipe device has crashed in native teardown).
 */
export async function main(args: string[]): Promise<number> {
  const [stage, ...rest] = args;
  const st = STAGES[stage];
  if (!st) {
    console.log(
      `usage: deno task train <stage> [flags]\n\nstages:\n${
        Object.entries(STAGES).map(([k, s]) => `  ${k.padEnd(12)} ${s.help}`).join("\n")
      }\n\n'deno task train <stage> --help' lists a stage's flags.`,
    );
    return stage && stage !== "--help" ? 2 : 0;
  }
  let flags: Flags;
  try {
    flags = parseFlags(rest, st.flags);
  } catch (e) {
    console.error(`train ${stage}: ${(e as Error).message}`);
    return 2;
  }
  if (flags.help) {
    console.log(usage(`deno task train ${stage}: ${st.help}`, st.flags));
    return 0;
  }
  try {
    await st.run(flags);
    return 0;
  } catch (e) {
    if (e instanceof Interrupted) {
      console.error(`train ${stage}: ${e.message}`);
      return e.signal === "SIGTERM" ? 143 : 130;
    }
    console.error(`train ${stage}: ${e instanceof UsageError ? "" : "error: "}${(e as Error).message}`);
    return e instanceof UsageError ? 2 : 1;
  }
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);

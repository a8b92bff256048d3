/**
 * @file The training entry of the CT pipeline (`deno.json` export "./train"): the harness, the run folder,
 * the loader and the stages. The command line is train/cli.ts (`deno task train`).
 */
export { type LogRecord, RunFolder } from "./run_folder.ts";
export {
  Interrupted,
  permutation,
  seedAdamW,
  seedTMax,
  train,
  type TrainerOptions,
  type TrainResult,
  type TrainTask,
} from "./trainer.ts";
export { Prefetcher, WorkerPool } from "./loader.ts";
export { runJob, type SampleJob, type SampleResult } from "./samples.ts";
export { buildSegSample, type SegSample, type SegSampleSpec, segWindowStart } from "./seg_data.ts";
export { buildSegModel, segFolds, segModelConfig, segStudies, type SegStudy, segTask } from "./seg.ts";
export { SEG_PRESETS, SEG_SEED, SEG_TINY, type SegConfig } from "./presets.ts";
export { ensureCache, ensurePhantoms, PHANTOMS } from "./dataset.ts";
export { curvesSvg } from "./curves.ts";

/**
 * @file The `infer` layer (deno.json export "./infer"): whole-study segmentation (sliding z window,
 * ensembles), the per-study metadata and its storage in the cache, the seed's validation dice, prediction of
 * a whole cache, vertebra crops, the competition metric and scoring, model loading, in-memory studies,
 * NIfTI masks, report pages, and `deno task infer` (pipeline.ts).
 */
export {
  type PredictOptions,
  predictVolume,
  type Volume,
  type VolumePrediction,
  windowStarts,
} from "./segment.ts";
export {
  computeMeta,
  DEFAULT_POSTPROCESS,
  type MetaBox,
  postprocessLabels,
  readSegMetaFile,
  readSegPrediction,
  readStudyMeta,
  type SegMetaFile,
  segPaths,
  type SegPostprocess,
  type StudyMeta,
  writeSegPrediction,
} from "./meta.ts";
export { DiceMeter } from "./dice.ts";
export { predictDataset, type PredictDatasetOptions } from "./predict_dataset.ts";
export { resampleSlices } from "./resample.ts";
export {
  aggregateStudy,
  type CompetitionScore,
  competitionScore,
  LOG_EPS,
  PROB_CLIP,
  studyLoss,
  targetWeight,
} from "./metric.ts";
export { differenceText, pairedBootstrap, type PairedInterval } from "./bootstrap.ts";
export { parseSubmission, readSubmission, scoreSubmission, writeSubmission } from "./score.ts";
export { buildModel, initFrom, loadModel, type ModelConfig, resolveWeights } from "./load.ts";
export { expandWeights, loadEnsemble, type Member } from "./ensemble.ts";
export { findStudies, type StudyRef } from "./discover.ts";
export { type InMemoryStudy, loadStudy } from "./study.ts";
export { StudyLoader } from "./study_loader.ts";
export { type CubeSource, memorySource, openCacheSource } from "./cube_source.ts";
export { labelsToNifti, upsampleLabels, writeLabelsNifti } from "./nifti_out.ts";
export { encodePng, pngDataUri } from "./png.ts";
export { type IndexEntry, indexHtml, type ReportCrop, type StudyReport, studyReportHtml } from "./report.ts";
export {
  classifyStudy,
  flipLastAxis,
  type InferOptions,
  runInference,
  type StudyResult,
} from "./pipeline.ts";
export * as crops from "./crops.ts";

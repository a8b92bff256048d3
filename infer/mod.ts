/**
 * @file The `infer` layer: whole-study segmentation (sliding z window, ensembles), the per-study metadata
 * and its storage in the cache, the seed's validation dice, and prediction of a whole cache.
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
  type MetaBox,
  readSegMetaFile,
  readSegPrediction,
  readStudyMeta,
  type SegMetaFile,
  segPaths,
  type StudyMeta,
  writeSegPrediction,
} from "./meta.ts";
export { DiceMeter } from "./dice.ts";
export { predictDataset, type PredictDatasetOptions } from "./predict_dataset.ts";

/**
 * @file The `data` namespace: CT series and masks.
 */
export {
  type DicomSeries,
  type DicomSlice,
  readDicomFile,
  readDicomSeries,
  type ReadSeriesOptions,
  toHounsfield,
} from "./dicom.ts";
export { decodeRle, initCodecs, TRANSFER_SYNTAXES } from "./codecs.ts";
export { niftiToVolume, type NiftiVolume, readNifti, volumeToNifti, writeNifti } from "./nifti.ts";
export {
  type BoundingBox,
  boxMap,
  boxRects,
  listStudies,
  makeFolds,
  parseRowId,
  readBoundingBoxes,
  readTrainCsv,
  rowIds,
  type SliceRect,
  type Study,
  TARGETS,
  type TrainRow,
} from "./rsna.ts";
export {
  type FractureBox,
  fractureBoxes,
  phantomStudy,
  type StudyLabels,
  type SynthOptions,
  writeSyntheticDataset,
} from "./synth.ts";
export { type CtSliceSpec, encodeJpegLossless, writeCtSlice } from "./dicom_write.ts";
export { type Box, type CacheHeader, type CubeName, isCached, readCube, readHeader } from "./cache.ts";
export { preprocessDataset, type PreprocessOptions, preprocessStudy, type Progress } from "./preprocess.ts";
export { resizeLinear16, resizeNearest8 } from "./resize.ts";
export {
  applyPlan,
  type AugmentPlan,
  type AugmentStep,
  cropAugment,
  drawAugment,
  type Rng,
  segAugment,
  type TransformSpec,
} from "./augment.ts";
export { type ComponentOptions, keepLargestComponents, labelComponents } from "./components.ts";
export { type LabelBox, labelBoxes, resampleArea, type ResampleAreaOptions } from "./crops.ts";

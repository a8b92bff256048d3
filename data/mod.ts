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

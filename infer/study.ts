/**
 * @file A study in memory, so that inference needs no cache: the DICOM series of one folder through the
 * seed's preprocessing (seed-pipeline.md 1.2-1.5) by `preprocessSeries` of data/preprocess.ts, the very
 * computation whose result `preprocessStudy` writes to the cache, plus the series' geometry (for writing
 * predictions back onto the CT, infer/nifti_out.ts).
 */
import { type DicomSeries, readDicomSeries, type ReadSeriesOptions } from "../data/dicom.ts";
import { preprocessSeries } from "../data/preprocess.ts";
import type { CacheHeader } from "../data/cache.ts";

/** Where the voxels of a [Z, H, W] series are in the patient (see `DicomSeries`). */
export type SeriesGeometry = Pick<DicomSeries, "shape" | "spacing" | "origin" | "direction">;

/** One preprocessed study in memory: the arrays and header the cache would hold for it. */
export interface InMemoryStudy {
  /** The study's id (the folder's name unless given). */
  uid: string;
  /** The DICOM folder it was read from. */
  dir: string;
  /** The cache's header.json for it: units, dtype, cube shapes, spacing, mean/std (all, [::2]). */
  header: CacheHeader;
  /** [Z, H, W] stored values (or int16 HU), slice 0 the most cranial. */
  image_full: Int16Array | Uint16Array;
  /** [Z, size, size] resized like cv2 INTER_LINEAR. */
  image_256: Int16Array | Uint16Array;
  /** Geometry of image_full in the patient (LPS). */
  geometry: SeriesGeometry;
  /** DICOM identifiers and the source file of each slice (volume order). */
  series: Pick<DicomSeries, "uids" | "files" | "modality" | "transferSyntax">;
}

/** Options of {@link loadStudy}. */
export interface LoadStudyOptions {
  /** "stored" (default, the seed's) or "hu"; must match what the models were trained on. */
  units?: "stored" | "hu";
  /** In-plane size of image_256 (default 256). */
  size?: number;
  /** Series choice, accepted modalities (default CT), gap tolerance. */
  series?: ReadSeriesOptions;
  /** Fewer slices than this is an error (default 8). */
  minSlices?: number;
  /** The study's id (default: the folder's name, as in the RSNA layout). */
  uid?: string;
}

/**
 * Reads a study folder's DICOM series and preprocesses it in memory exactly as the cache would (same
 * function, same arrays). Errors name the folder (or the offending file): no DICOM, a modality that is not
 * accepted (CT by default), mixed series, missing slices, fewer than `minSlices` slices.
 */
export async function loadStudy(dir: string, opts: LoadStudyOptions = {}): Promise<InMemoryStudy> {
  const minSlices = opts.minSlices ?? 8;
  if (!Number.isInteger(minSlices) || minSlices < 1) {
    throw new Error(`loadStudy(${dir}): minSlices must be an integer >= 1, got ${minSlices}`);
  }
  return studyFromSeries(await readDicomSeries(dir, opts.series), dir, opts);
}

/**
 * {@link loadStudy} of a series already read (e.g. by `seriesFromFiles` in a browser): the same checks and
 * preprocessing; `dir` names the study in errors and gives the default uid.
 */
export function studyFromSeries(
  series: DicomSeries,
  dir: string,
  opts: LoadStudyOptions = {},
): InMemoryStudy {
  const minSlices = opts.minSlices ?? 8;
  const Z = series.shape[0];
  if (Z < minSlices) {
    throw new Error(
      `${dir}: only ${Z} slice${Z === 1 ? "" : "s"} in the series; at least ${minSlices} needed (minSlices)`,
    );
  }
  const uid = opts.uid ?? (dir.replace(/\/+$/, "").split("/").pop() || dir);
  // Taken before preprocessing: with stored units image_full is the series' own array.
  const geometry: SeriesGeometry = {
    shape: [...series.shape],
    spacing: [...series.spacing],
    origin: [...series.origin],
    direction: [[...series.direction[0]], [...series.direction[1]], [...series.direction[2]]],
  };
  const p = preprocessSeries(series, { units: opts.units, size: opts.size, full: true, uid });
  return {
    uid,
    dir,
    header: p.header,
    image_full: p.image_full!,
    image_256: p.image_256,
    geometry,
    series: {
      uids: series.uids,
      files: series.files,
      modality: series.modality,
      transferSyntax: series.transferSyntax,
    },
  };
}

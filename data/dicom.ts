/**
 * @file DICOM CT series: `readDicomSeries(dir)` reads every `.dcm` of a study folder, groups by
 * SeriesInstanceUID, orders slices by ImagePositionPatient projected on the slice normal (never by file name
 * or InstanceNumber) so that slice 0 is the most cranial, decodes the pixel data of every supported transfer
 * syntax to the stored values (masked to BitsStored, sign-extended when PixelRepresentation is 1), and
 * checks the geometry (missing slices, inconsistent spacing, sizes, modality). `toHounsfield` applies the
 * rescale.
 */
import dicomParser from "dicom-parser";
import { inflateRawSync } from "node:zlib";
import { decodeFrame, initCodecs, isEncapsulated, TRANSFER_SYNTAXES } from "./codecs.ts";

/** One decoded slice with the attributes the series needs. */
export interface DicomSlice {
  file: string;
  studyUid: string;
  seriesUid: string;
  sopUid: string;
  modality: string;
  transferSyntax: string;
  rows: number;
  cols: number;
  bitsAllocated: number;
  bitsStored: number;
  pixelRepresentation: number;
  photometric: string;
  position: [number, number, number] | null;
  orientation: [number, number, number, number, number, number] | null;
  pixelSpacing: [number, number] | null;
  sliceThickness: number | null;
  slope: number;
  intercept: number;
  instanceNumber: number | null;
  pixels: Int16Array | Uint16Array;
}

/** A CT volume as stored values in [z, y, x] order, slice 0 the most cranial. */
export interface DicomSeries {
  /** Stored values (Int16Array when PixelRepresentation is 1, else Uint16Array). */
  pixels: Int16Array | Uint16Array;
  shape: [number, number, number];
  /** Voxel size in mm, [z, y, x] (z from the positions, not SliceThickness). */
  spacing: [number, number, number];
  /** Patient position (mm, LPS) of voxel [0, 0, 0]. */
  origin: [number, number, number];
  /** Unit vectors of increasing x (row direction), y (column direction) and z (slice order), in LPS. */
  direction: [[number, number, number], [number, number, number], [number, number, number]];
  rescale: { slope: number; intercept: number };
  photometric: string;
  modality: string;
  transferSyntax: string;
  uids: { study: string; series: string; sop: string[] };
  /** Source file per slice, in volume order. */
  files: string[];
}

function nums(ds: dicomParser.DataSet, tag: string): number[] | null {
  const s = ds.string(tag);
  if (!s) return null;
  const v = s.split("\\").map(Number);
  return v.every(Number.isFinite) ? v : null;
}

/** Parses one DICOM file and decodes its pixels. Errors name the file. */
export function readDicomFile(bytes: Uint8Array, file: string): DicomSlice {
  let ds: dicomParser.DataSet;
  try {
    ds = dicomParser.parseDicom(bytes, {
      inflater: (arr: Uint8Array, pos: number) => {
        const inflated = inflateRawSync(arr.subarray(pos));
        const out = new Uint8Array(pos + inflated.length);
        out.set(arr.subarray(0, pos));
        out.set(inflated, pos);
        return out;
      },
    } as unknown as dicomParser.ParseDicomOptions);
  } catch (e) {
    const msg = typeof e === "string" ? e : (e as Error)?.message ?? String(e);
    throw new Error(`${file}: not a readable DICOM file (${msg})`);
  }
  const ts = ds.string("x00020010")?.trim() ?? "1.2.840.10008.1.2";
  if (!(ts in TRANSFER_SYNTAXES)) throw new Error(`${file}: unsupported transfer syntax ${ts}`);
  const rows = ds.uint16("x00280010") ?? 0, cols = ds.uint16("x00280011") ?? 0;
  const pixelEl = ds.elements.x7fe00010;
  if (!pixelEl || !rows || !cols) throw new Error(`${file}: has no image (Rows/Columns/PixelData missing)`);
  const bitsAllocated = ds.uint16("x00280100") ?? 16;
  const bitsStored = ds.uint16("x00280101") ?? bitsAllocated;
  const pixelRepresentation = ds.uint16("x00280103") ?? 0;
  const samples = ds.uint16("x00280002") ?? 1;
  if (samples !== 1) throw new Error(`${file}: ${samples} samples per pixel; CT slices must be grayscale`);
  if (bitsAllocated !== 16 && bitsAllocated !== 8) {
    throw new Error(`${file}: BitsAllocated ${bitsAllocated} is not supported`);
  }
  const n = rows * cols;
  let raw: Uint8Array;
  try {
    if (isEncapsulated(ts)) {
      if (!pixelEl.fragments?.length) throw new Error("encapsulated pixel data without fragments");
      const frame = dicomParser.readEncapsulatedPixelDataFromFragments(
        ds,
        pixelEl,
        0,
        pixelEl.fragments.length,
      );
      raw = decodeFrame(ts, frame, rows, cols, bitsAllocated);
    } else {
      const len = n * (bitsAllocated / 8);
      if (pixelEl.dataOffset + len > ds.byteArray.length) throw new Error("pixel data is truncated");
      raw = ds.byteArray.slice(pixelEl.dataOffset, pixelEl.dataOffset + len);
      if (ts === "1.2.840.10008.1.2.2" && bitsAllocated === 16) {
        for (let i = 0; i < raw.length; i += 2) [raw[i], raw[i + 1]] = [raw[i + 1], raw[i]];
      }
    }
  } catch (e) {
    const msg = typeof e === "string" ? e : (e as Error)?.message ?? String(e);
    throw new Error(`${file}: cannot decode pixel data (${TRANSFER_SYNTAXES[ts]}): ${msg}`);
  }
  if (raw.length < n * (bitsAllocated / 8)) {
    throw new Error(`${file}: decoded ${raw.length} bytes for ${rows}x${cols} pixels`);
  }
  // Mask to BitsStored, sign-extend when signed: the codestream's own signedness is not trusted.
  const mask = bitsStored >= 32 ? 0xffffffff : (1 << bitsStored) - 1;
  const signBit = 1 << (bitsStored - 1);
  const pixels = pixelRepresentation === 1 ? new Int16Array(n) : new Uint16Array(n);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < n; i++) {
    let v = (bitsAllocated === 16 ? dv.getUint16(2 * i, true) : raw[i]) & mask;
    if (pixelRepresentation === 1 && v & signBit) v -= 1 << bitsStored;
    pixels[i] = v;
  }
  const pos = nums(ds, "x00200032"), ori = nums(ds, "x00200037"), sp = nums(ds, "x00280030");
  return {
    file,
    studyUid: ds.string("x0020000d") ?? "",
    seriesUid: ds.string("x0020000e") ?? "",
    sopUid: ds.string("x00080018") ?? "",
    modality: ds.string("x00080060") ?? "",
    transferSyntax: ts,
    rows,
    cols,
    bitsAllocated,
    bitsStored,
    pixelRepresentation,
    photometric: (ds.string("x00280004") ?? "MONOCHROME2").trim(),
    position: pos?.length === 3 ? pos as [number, number, number] : null,
    orientation: ori?.length === 6 ? ori as [number, number, number, number, number, number] : null,
    pixelSpacing: sp?.length === 2 ? sp as [number, number] : null,
    sliceThickness: ds.floatString("x00180050") ?? null,
    slope: ds.floatString("x00281053") ?? 1,
    intercept: ds.floatString("x00281052") ?? 0,
    instanceNumber: ds.intString("x00200013") ?? null,
    pixels,
  };
}

/** Options of {@link readDicomSeries}. */
export interface ReadSeriesOptions {
  /** SeriesInstanceUID to read when the folder holds several series (otherwise that is an error). */
  series?: string;
  /** Accepted modalities (default ["CT"]). */
  modalities?: string[];
  /** Relative deviation of a slice gap from the median gap above which a slice counts as missing (0.5). */
  gapTolerance?: number;
}

const dot = (a: number[], b: number[]) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a: number[], b: number[]): [number, number, number] => [
  a[1] * b[2] - a[2] * b[1],
  a[2] * b[0] - a[0] * b[2],
  a[0] * b[1] - a[1] * b[0],
];

/** Reads a study folder's `.dcm` files into one ordered volume (see the file comment). */
export async function readDicomSeries(dir: string, opts: ReadSeriesOptions = {}): Promise<DicomSeries> {
  let entries: string[];
  try {
    entries = [];
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.toLowerCase().endsWith(".dcm")) entries.push(e.name);
    }
  } catch (e) {
    throw new Error(`${dir}: cannot list DICOM folder (${(e as Error).message})`);
  }
  if (!entries.length) throw new Error(`${dir}: no .dcm files in the folder`);
  entries.sort();
  const files: { name: string; bytes: Uint8Array }[] = [];
  for (const name of entries) {
    files.push({ name: `${dir}/${name}`, bytes: await Deno.readFile(`${dir}/${name}`) });
  }
  return await seriesFromFiles(files, dir, opts);
}

/**
 * The series of DICOM files held in memory (`name` names each in errors; order does not matter): the
 * computation of {@link readDicomSeries} without file access, so a browser can run it on dropped files.
 */
export async function seriesFromFiles(
  files: { name: string; bytes: Uint8Array }[],
  dir: string,
  opts: ReadSeriesOptions = {},
): Promise<DicomSeries> {
  if (!files.length) throw new Error(`${dir}: no DICOM files`);
  await initCodecs();
  const slices: DicomSlice[] = [];
  for (const f of files) slices.push(readDicomFile(f.bytes, f.name));
  const bySeries = new Map<string, DicomSlice[]>();
  for (const s of slices) {
    let l = bySeries.get(s.seriesUid);
    if (!l) bySeries.set(s.seriesUid, l = []);
    l.push(s);
  }
  let chosen: DicomSlice[];
  if (opts.series) {
    chosen = bySeries.get(opts.series) ?? [];
    if (!chosen.length) {
      throw new Error(
        `${dir}: no slice belongs to series ${opts.series} (found ${[...bySeries.keys()].join(", ")})`,
      );
    }
  } else if (bySeries.size > 1) {
    const desc = [...bySeries].map(([uid, l]) => `${uid} (${l.length} files, e.g. ${l[0].file})`).join("; ");
    throw new Error(`${dir}: mixes ${bySeries.size} series: ${desc}; pass {series} to choose one`);
  } else chosen = slices;
  const first = chosen[0];
  const modalities = opts.modalities ?? ["CT"];
  for (const s of chosen) {
    if (!modalities.includes(s.modality)) {
      throw new Error(`${s.file}: modality "${s.modality}" is not ${modalities.join("/")}`);
    }
    if (s.rows !== first.rows || s.cols !== first.cols) {
      throw new Error(
        `${s.file}: ${s.rows}x${s.cols} pixels, but ${first.file} has ${first.rows}x${first.cols}`,
      );
    }
    if (!s.position || !s.orientation) {
      throw new Error(`${s.file}: ImagePositionPatient or ImageOrientationPatient missing`);
    }
    if (s.pixelRepresentation !== first.pixelRepresentation) {
      throw new Error(`${s.file}: PixelRepresentation differs from ${first.file}`);
    }
    if (s.slope !== first.slope || s.intercept !== first.intercept) {
      throw new Error(
        `${s.file}: rescale ${s.slope}/${s.intercept} differs from ${first.file} (${first.slope}/${first.intercept})`,
      );
    }
    for (let k = 0; k < 6; k++) {
      if (Math.abs(s.orientation[k] - first.orientation![k]) > 1e-4) {
        throw new Error(`${s.file}: ImageOrientationPatient differs from ${first.file}`);
      }
    }
  }
  const ori = first.orientation!;
  const rowDir = [ori[0], ori[1], ori[2]], colDir = [ori[3], ori[4], ori[5]];
  const normal = cross(rowDir, colDir);
  const key = (s: DicomSlice) => dot(s.position!, normal);
  chosen.sort((a, b) => key(a) - key(b));
  // Slice 0 is the most cranial: the highest patient z (LPS +z is superior).
  if (chosen.length > 1 && chosen[chosen.length - 1].position![2] > chosen[0].position![2]) chosen.reverse();
  const gaps: number[] = [];
  for (let i = 1; i < chosen.length; i++) gaps.push(Math.abs(key(chosen[i]) - key(chosen[i - 1])));
  const median = gaps.length
    ? [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)]
    : first.sliceThickness ?? 1;
  const tol = opts.gapTolerance ?? 0.5;
  for (let i = 0; i < gaps.length; i++) {
    const a = chosen[i], b = chosen[i + 1];
    if (gaps[i] < 1e-3) {
      throw new Error(`${dir}: ${a.file} and ${b.file} are at the same position (duplicate slice?)`);
    }
    if (gaps[i] > median * (1 + tol)) {
      const missing = Math.round(gaps[i] / median) - 1;
      throw new Error(
        `${dir}: about ${Math.max(1, missing)} slice(s) missing between ${a.file} and ${b.file} ` +
          `(gap ${gaps[i].toFixed(3)} mm, usual ${median.toFixed(3)} mm)`,
      );
    }
    if (gaps[i] < median * (1 - tol)) {
      throw new Error(
        `${dir}: inconsistent spacing between ${a.file} and ${b.file} (${gaps[i].toFixed(3)} mm vs ${
          median.toFixed(3)
        } mm)`,
      );
    }
  }
  const n = first.rows * first.cols;
  const pixels = first.pixelRepresentation === 1
    ? new Int16Array(n * chosen.length)
    : new Uint16Array(n * chosen.length);
  chosen.forEach((s, z) => pixels.set(s.pixels, z * n));
  const zDir = chosen.length > 1
    ? (() => {
      const d = chosen[1].position!.map((v, i) => v - chosen[0].position![i]);
      const l = Math.hypot(...d);
      return d.map((v) => v / l) as [number, number, number];
    })()
    : normal;
  const ps = first.pixelSpacing ?? [1, 1];
  return {
    pixels,
    shape: [chosen.length, first.rows, first.cols],
    spacing: [median, ps[0], ps[1]],
    origin: [...chosen[0].position!] as [number, number, number],
    direction: [rowDir as [number, number, number], colDir as [number, number, number], zDir],
    rescale: { slope: first.slope, intercept: first.intercept },
    photometric: first.photometric,
    modality: first.modality,
    transferSyntax: first.transferSyntax,
    uids: { study: first.studyUid, series: first.seriesUid, sop: chosen.map((s) => s.sopUid) },
    files: chosen.map((s) => s.file),
  };
}

/** Hounsfield units: stored * RescaleSlope + RescaleIntercept, as Float32. */
export function toHounsfield(series: DicomSeries): Float32Array {
  const { slope, intercept } = series.rescale;
  const out = new Float32Array(series.pixels.length);
  for (let i = 0; i < out.length; i++) out[i] = series.pixels[i] * slope + intercept;
  return out;
}

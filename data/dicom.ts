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
import { inflateRaw } from "../io/inflate.ts";
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

// Explicit VRs whose length is 4 bytes after 2 reserved ones (PS3.5 7.1.2); the others have a 2-byte length.
const LONG_VRS = new Set(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]);

const tagName = (tag: string) => `(${tag.slice(1, 5).toUpperCase()},${tag.slice(5, 9).toUpperCase()})`;

/**
 * The text of whatever a parser or codec threw: dicom-parser throws strings, Errors, and `{exception, dataSet}`
 * objects; wasm codecs may throw numbers. Never "[object Object]".
 */
function errorText(e: unknown): string {
  const inner = e !== null && typeof e === "object" && "exception" in e
    ? (e as { exception: unknown }).exception
    : e;
  if (typeof inner === "string") return inner;
  if (inner instanceof Error) return inner.message;
  const msg = (inner as { message?: unknown })?.message;
  if (typeof msg === "string") return msg;
  try {
    return JSON.stringify(inner) ?? String(inner);
  } catch {
    return Object.prototype.toString.call(inner);
  }
}

/**
 * What dicom-parser found wrong, in words. When it throws `{exception, dataSet}` (the elements read before
 * the failure) or fails in the file meta information, a file that ends inside an element is named as
 * truncated, with the element, where its value starts, how many bytes it needs and how many the file has;
 * otherwise the parser's own text.
 */
function parseFailure(e: unknown, bytes: Uint8Array): string {
  const ds = e !== null && typeof e === "object" && "dataSet" in e
    ? (e as { dataSet?: dicomParser.DataSet }).dataSet
    : undefined;
  return truncation(bytes, ds) ?? errorText(e);
}

const UNDEFINED_LENGTH = 0xffffffff;

/**
 * The first element of a parsed data set whose value runs past the end of its `n` bytes (a fragment of
 * encapsulated pixel data included), in words; undefined if none.
 */
function elementPastEnd(ds: dicomParser.DataSet, n: number): string | undefined {
  const has = `the file has ${n}`;
  for (const el of Object.values(ds.elements)) {
    if (el.length !== UNDEFINED_LENGTH && el.dataOffset + el.length > n) {
      return `truncated: the element ${
        tagName(el.tag)
      } at byte ${el.dataOffset} needs ${el.length} bytes, ${has}`;
    }
    const f = el.fragments?.findIndex((f) => f.position + f.length > n) ?? -1;
    if (f >= 0) {
      const fr = el.fragments![f];
      return `truncated: fragment ${f + 1} of ${tagName(el.tag)} at byte ${fr.position} needs ${fr.length} ` +
        `bytes, ${has}`;
    }
  }
  return undefined;
}

/**
 * Where `bytes` end inside an element, from the file meta information and the elements parsed before the
 * failure (`ds`); undefined if the file does not look truncated.
 */
function truncation(bytes: Uint8Array, ds?: dicomParser.DataSet): string | undefined {
  const n = bytes.length;
  const has = `the file has ${n}`;
  if (n < 132) return `${n} bytes: a DICOM file starts with a 128-byte preamble and "DICM"`;
  if (String.fromCharCode(...bytes.subarray(128, 132)) !== "DICM") return undefined;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, n);
  // File meta information: (0002,0000) UL holds its length after that element.
  if (n < 144) return `truncated: the file meta information at byte 132 needs at least 12 bytes, ${has}`;
  const groupLength = dv.getUint16(132, true) === 2 && dv.getUint16(134, true) === 0;
  const metaEnd = groupLength ? 144 + dv.getUint32(140, true) : 0;
  if (metaEnd > n) {
    return `truncated: the file meta information at byte 144 needs ${metaEnd - 144} bytes, ${has}`;
  }
  if (metaEnd === n && !ds) return `truncated: the file ends with its file meta information at byte ${n}`;
  let ts: string | undefined;
  try {
    // (Only the meta information: the header reader peeks at the next element, which may be cut.)
    ts = dicomParser.readPart10Header(metaEnd ? bytes.subarray(0, metaEnd) : bytes).string("x00020010")
      ?.trim();
  } catch {
    return undefined;
  }
  // A deflated data set is parsed from its inflated copy: its offsets are not the file's.
  if (ts === "1.2.840.10008.1.2.1.99" || (ds && ds.byteArray.length !== n)) return undefined;
  if (ds) {
    const past = elementPastEnd(ds, n);
    if (past) return past;
  }
  // The element being read when the parser failed is not in the data set: it starts where the last one ends.
  const last = Object.values(ds?.elements ?? {}).reduce<dicomParser.Element | undefined>(
    (a, el) => (!a || el.dataOffset > a.dataOffset ? el : a),
    undefined,
  );
  if (last?.length === UNDEFINED_LENGTH) return undefined;
  const at = last ? last.dataOffset + last.length : metaEnd;
  if (!at || at >= n) return undefined;
  if (at + 8 > n) return `truncated: the element header at byte ${at} needs 8 bytes, ${has}`;
  const le = ts !== "1.2.840.10008.1.2.2";
  const hex = (o: number) => dv.getUint16(o, le).toString(16).padStart(4, "0");
  const tag = tagName(`x${hex(at)}${hex(at + 2)}`);
  const vr = String.fromCharCode(bytes[at + 4], bytes[at + 5]);
  let length: number, offset: number;
  if (ts === "1.2.840.10008.1.2") [length, offset] = [dv.getUint32(at + 4, le), at + 8];
  else if (!LONG_VRS.has(vr)) [length, offset] = [dv.getUint16(at + 6, le), at + 8];
  else {
    if (at + 12 > n) return `truncated: the element header at byte ${at} needs 12 bytes, ${has}`;
    [length, offset] = [dv.getUint32(at + 8, le), at + 12];
  }
  if (length === UNDEFINED_LENGTH) {
    return `truncated: the element ${tag} at byte ${offset} (undefined length) is not closed, ${has}`;
  }
  if (offset + length <= n) return undefined;
  return `truncated: the element ${tag} at byte ${offset} needs ${length} bytes, ${has}`;
}

/**
 * Inflates a deflated data set: node:zlib in Deno (about 4x faster), the engine's inflater (io/inflate.ts)
 * in the browser page, whose bundle has no zlib.
 */
const inflate = (b: Uint8Array): Uint8Array =>
  "Deno" in globalThis ? inflateRawSync(b) : inflateRaw(b, b.length * 4, "deflate stream");

/** Parses one DICOM file and decodes its pixels. Errors name the file. */
export function readDicomFile(bytes: Uint8Array, file: string): DicomSlice {
  const ds = parseDataSet(bytes, file);
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
  let raw: Uint8Array;
  try {
    raw = pixelBytes(ds, pixelEl, ts, rows, cols, bitsAllocated);
  } catch (e) {
    const msg = errorText(e);
    throw new Error(`${file}: cannot decode pixel data (${TRANSFER_SYNTAXES[ts]}): ${msg}`);
  }
  if (raw.length < rows * cols * (bitsAllocated / 8)) {
    throw new Error(`${file}: decoded ${raw.length} bytes for ${rows}x${cols} pixels`);
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
    pixels: storedValues(raw, rows * cols, bitsAllocated, bitsStored, pixelRepresentation),
  };
}

/** The data set of a file (a deflated one inflated); a file that does not parse or runs short throws. */
function parseDataSet(bytes: Uint8Array, file: string): dicomParser.DataSet {
  let ds: dicomParser.DataSet;
  try {
    ds = dicomParser.parseDicom(bytes, {
      inflater: (arr: Uint8Array, pos: number) => {
        let inflated: Uint8Array;
        try {
          inflated = inflate(arr.subarray(pos));
        } catch (e) {
          throw new Error(`the deflated data set at byte ${pos} does not inflate: ${errorText(e)}`);
        }
        const out = new Uint8Array(pos + inflated.length);
        out.set(arr.subarray(0, pos));
        out.set(inflated, pos);
        return out;
      },
    } as unknown as dicomParser.ParseDicomOptions);
  } catch (e) {
    throw new Error(`${file}: not a readable DICOM file (${parseFailure(e, bytes)})`);
  }
  // Some truncations parse (an implicit VR data set, a cut at an element's end): no value may run past the end.
  const past = ds.byteArray.length === bytes.length ? elementPastEnd(ds, bytes.length) : undefined;
  if (past) throw new Error(`${file}: not a readable DICOM file (${past})`);
  return ds;
}

/** The first frame's pixel bytes, little-endian: decoded from its codec or cut from the native data. */
function pixelBytes(
  ds: dicomParser.DataSet,
  pixelEl: dicomParser.Element,
  ts: string,
  rows: number,
  cols: number,
  bitsAllocated: number,
): Uint8Array {
  if (isEncapsulated(ts)) {
    if (!pixelEl.fragments?.length) throw new Error("encapsulated pixel data without fragments");
    const frame = dicomParser.readEncapsulatedPixelDataFromFragments(
      ds,
      pixelEl,
      0,
      pixelEl.fragments.length,
    );
    return decodeFrame(ts, frame, rows, cols, bitsAllocated);
  }
  const len = rows * cols * (bitsAllocated / 8);
  if (pixelEl.dataOffset + len > ds.byteArray.length) {
    throw new Error(
      `truncated: ${rows}x${cols} ${bitsAllocated}-bit pixels need ${len} bytes from byte ` +
        `${pixelEl.dataOffset}, the file has ${ds.byteArray.length}`,
    );
  }
  const raw = ds.byteArray.slice(pixelEl.dataOffset, pixelEl.dataOffset + len);
  if (ts === "1.2.840.10008.1.2.2" && bitsAllocated === 16) {
    for (let i = 0; i < raw.length; i += 2) [raw[i], raw[i + 1]] = [raw[i + 1], raw[i]];
  }
  return raw;
}

/** Stored values masked to BitsStored and sign-extended when signed (a codestream's own signedness is not trusted). */
function storedValues(
  raw: Uint8Array,
  n: number,
  bitsAllocated: number,
  bitsStored: number,
  pixelRepresentation: number,
): Int16Array | Uint16Array {
  const mask = bitsStored >= 32 ? 0xffffffff : (1 << bitsStored) - 1;
  const signBit = 1 << (bitsStored - 1);
  const pixels = pixelRepresentation === 1 ? new Int16Array(n) : new Uint16Array(n);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < n; i++) {
    let v = (bitsAllocated === 16 ? dv.getUint16(2 * i, true) : raw[i]) & mask;
    if (pixelRepresentation === 1 && v & signBit) v -= 1 << bitsStored;
    pixels[i] = v;
  }
  return pixels;
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
  const chosen = chooseSeries(files.map((f) => readDicomFile(f.bytes, f.name)), dir, opts.series);
  const first = chosen[0];
  checkAlike(chosen, opts.modalities ?? ["CT"]);
  const ori = first.orientation!;
  const rowDir = [ori[0], ori[1], ori[2]], colDir = [ori[3], ori[4], ori[5]];
  const normal = cross(rowDir, colDir);
  const key = (s: DicomSlice) => dot(s.position!, normal);
  chosen.sort((a, b) => key(a) - key(b));
  // Slice 0 is the most cranial: the highest patient z (LPS +z is superior).
  if (chosen.length > 1 && chosen[chosen.length - 1].position![2] > chosen[0].position![2]) chosen.reverse();
  const spacing = sliceSpacing(chosen, key, dir, opts.gapTolerance ?? 0.5);
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
    spacing: [spacing, ps[0], ps[1]],
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

/** The slices of one series: `series` when given, else the only one there is (several throw, listing them). */
function chooseSeries(slices: DicomSlice[], dir: string, series: string | undefined): DicomSlice[] {
  const bySeries = new Map<string, DicomSlice[]>();
  for (const s of slices) {
    let l = bySeries.get(s.seriesUid);
    if (!l) bySeries.set(s.seriesUid, l = []);
    l.push(s);
  }
  if (series) {
    const chosen = bySeries.get(series) ?? [];
    if (!chosen.length) {
      throw new Error(
        `${dir}: no slice belongs to series ${series} (found ${[...bySeries.keys()].join(", ")})`,
      );
    }
    return chosen;
  }
  if (bySeries.size > 1) {
    const desc = [...bySeries].map(([uid, l]) => `${uid} (${l.length} files, e.g. ${l[0].file})`).join("; ");
    throw new Error(`${dir}: mixes ${bySeries.size} series: ${desc}; pass {series} to choose one`);
  }
  return slices;
}

/** Every slice of a series the first one's modality, size, pixel type, rescale and orientation, or a throw. */
function checkAlike(chosen: DicomSlice[], modalities: string[]): void {
  const first = chosen[0];
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
}

/**
 * The median distance between neighbouring slices along the normal (sorted by `key`); a duplicate position,
 * a gap over (1 + tol) or under (1 - tol) times the median throws naming both files.
 */
function sliceSpacing(
  chosen: DicomSlice[],
  key: (s: DicomSlice) => number,
  dir: string,
  tol: number,
): number {
  const gaps: number[] = [];
  for (let i = 1; i < chosen.length; i++) gaps.push(Math.abs(key(chosen[i]) - key(chosen[i - 1])));
  const median = gaps.length
    ? [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)]
    : chosen[0].sliceThickness ?? 1;
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
  return median;
}

/** Hounsfield units: stored * RescaleSlope + RescaleIntercept, as Float32. */
export function toHounsfield(series: DicomSeries): Float32Array {
  const { slope, intercept } = series.rescale;
  const out = new Float32Array(series.pixels.length);
  for (let i = 0; i < out.length; i++) out[i] = series.pixels[i] * slope + intercept;
  return out;
}

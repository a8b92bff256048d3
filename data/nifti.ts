/**
 * @file NIfTI-1 volumes (.nii / .nii.gz): reading with nifti-reader-js (byte-swapping big-endian files),
 * writing our own (header serialised by nifti-reader-js, atomic), and the RSNA mask alignment rule.
 *
 * The RSNA segmentations store mask[i, j, k] with i = DICOM column, j = Rows - 1 - row, k = slice from
 * inferior to superior (the layout dcm2niix writes, orientation LAS). Our DICOM volumes are [z, row, col]
 * with slice 0 the most cranial, so volume[z, r, c] = mask[c, J - 1 - r, K - 1 - z]
 * (`niftiToVolume`), the same rule as the seed's preprocessing (seed-pipeline.md section 1.3).
 */
import * as nifti from "nifti-reader-js";
import { gunzipSync, gzipSync } from "node:zlib";
import type { DicomSeries } from "./dicom.ts";
import { writeFileAtomic } from "../io/files.ts";

/** Element arrays a NIfTI volume may hold. */
export type NiftiData =
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array;

/** A NIfTI volume: data in file order (i fastest), dims [I, J, K], and the voxel-to-RAS affine. */
export interface NiftiVolume {
  data: NiftiData;
  shape: [number, number, number];
  affine: number[][];
  /** Voxel sizes [I, J, K] in mm. */
  spacing: [number, number, number];
}

const TYPES: Record<number, { ctor: new (n: number) => NiftiData; bytes: number }> = {
  2: { ctor: Uint8Array, bytes: 1 },
  4: { ctor: Int16Array, bytes: 2 },
  8: { ctor: Int32Array, bytes: 4 },
  16: { ctor: Float32Array, bytes: 4 },
  64: { ctor: Float64Array, bytes: 8 },
  256: { ctor: Int8Array, bytes: 1 },
  512: { ctor: Uint16Array, bytes: 2 },
  768: { ctor: Uint32Array, bytes: 4 },
};

function codeOf(data: NiftiData): number {
  for (const [code, t] of Object.entries(TYPES)) if (data instanceof t.ctor) return Number(code);
  throw new Error("unsupported NIfTI element type");
}

/** Reads a .nii or .nii.gz file. Errors name the file. */
export async function readNifti(path: string): Promise<NiftiVolume> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read NIfTI file (${(e as Error).message})`);
  }
  let buf = bytes.slice().buffer as ArrayBuffer;
  try {
    if (nifti.isCompressed(buf)) buf = new Uint8Array(gunzipSync(bytes)).slice().buffer as ArrayBuffer;
  } catch (e) {
    throw new Error(`${path}: corrupt gzip stream (${(e as Error).message})`);
  }
  if (!nifti.isNIFTI1(buf)) throw new Error(`${path}: not a NIfTI-1 file`);
  const h = nifti.readHeader(buf) as nifti.NIFTI1;
  const t = TYPES[h.datatypeCode];
  if (!t) throw new Error(`${path}: unsupported NIfTI datatype ${h.datatypeCode}`);
  const [ndim, I, J, K] = h.dims;
  if (ndim < 3 || (ndim > 3 && h.dims.slice(4, ndim + 1).some((d: number) => d > 1))) {
    throw new Error(`${path}: expected a 3-D volume, dims are [${h.dims.slice(1, ndim + 1)}]`);
  }
  const n = I * J * K;
  const start = Math.floor(h.vox_offset);
  if (start + n * t.bytes > buf.byteLength) throw new Error(`${path}: image data is truncated`);
  const raw = new Uint8Array(buf, start, n * t.bytes).slice();
  if (!h.littleEndian && t.bytes > 1) {
    for (let i = 0; i < raw.length; i += t.bytes) raw.subarray(i, i + t.bytes).reverse();
  }
  const data = new (t.ctor as unknown as new (b: ArrayBuffer) => NiftiData)(raw.buffer);
  return {
    data,
    shape: [I, J, K],
    affine: h.affine.map((r: number[]) => [...r]),
    spacing: [h.pixDims[1], h.pixDims[2], h.pixDims[3]],
  };
}

/** Writes a volume as .nii (or .nii.gz by extension), sform and qform code 1, atomically. */
export async function writeNifti(path: string, vol: NiftiVolume): Promise<void> {
  const out = encodeNifti(vol, path);
  await writeFileAtomic(path, path.endsWith(".gz") ? new Uint8Array(gzipSync(out)) : out, "NIfTI file");
}

/**
 * The bytes of an uncompressed .nii file of a volume (what {@link writeNifti} writes, before any gzip);
 * `path` names it in errors. No file access: a browser builds its downloads with it.
 */
export function encodeNifti(vol: NiftiVolume, path = "<nifti>"): Uint8Array {
  const [I, J, K] = vol.shape;
  if (vol.data.length !== I * J * K) {
    throw new Error(`${path}: ${vol.data.length} values do not fill [${vol.shape}]`);
  }
  const code = codeOf(vol.data);
  const h = new nifti.NIFTI1();
  h.littleEndian = true;
  h.dims = [3, I, J, K, 1, 1, 1, 1];
  h.datatypeCode = code;
  h.numBitsPerVoxel = TYPES[code].bytes * 8;
  h.pixDims = [1, ...vol.spacing, 0, 0, 0, 0];
  h.vox_offset = 352;
  h.scl_slope = 1;
  h.scl_inter = 0;
  h.xyzt_units = 2; // millimetres
  h.sform_code = 1;
  h.qform_code = 0;
  h.affine = vol.affine.map((r) => [...r]);
  h.magic = "n+1";
  const hdr = new Uint8Array(h.toArrayBuffer());
  const out = new Uint8Array(352 + vol.data.byteLength);
  out.set(hdr.subarray(0, 348));
  out.set(new Uint8Array(vol.data.buffer, vol.data.byteOffset, vol.data.byteLength), 352);
  return out;
}

/**
 * An RSNA-layout mask as a [Z, Y, X] uint8 volume aligned with a DICOM series read by `readDicomSeries`
 * (slice 0 the most cranial): volume[z, r, c] = mask[c, J - 1 - r, K - 1 - z]. The mask's dims must be
 * [X, Y, Z] of the series; otherwise the error names the file and both shapes.
 */
export function niftiToVolume(
  vol: NiftiVolume,
  shape: readonly [number, number, number],
  path = "<mask>",
): Uint8Array {
  const [Z, Y, X] = shape;
  const [I, J, K] = vol.shape;
  if (I !== X || J !== Y || K !== Z) {
    throw new Error(
      `${path}: mask dims [${vol.shape}] do not match the DICOM series (expected [${X},${Y},${Z}] for a [${Z},${Y},${X}] volume)`,
    );
  }
  const out = new Uint8Array(Z * Y * X);
  for (let z = 0; z < Z; z++) {
    const k = K - 1 - z;
    for (let r = 0; r < Y; r++) {
      const j = J - 1 - r;
      for (let c = 0; c < X; c++) out[(z * Y + r) * X + c] = vol.data[(k * J + j) * I + c] as number;
    }
  }
  return out;
}

/**
 * The inverse of {@link niftiToVolume}: a [Z, Y, X] mask aligned with `series` as an RSNA-layout NIfTI
 * volume with the voxel-to-RAS affine of the series (what dcm2niix writes).
 */
export function volumeToNifti(
  mask: Uint8Array,
  series: Pick<DicomSeries, "shape" | "spacing" | "origin" | "direction">,
): NiftiVolume {
  const [Z, Y, X] = series.shape;
  if (mask.length !== Z * Y * X) {
    throw new Error(`volumeToNifti: ${mask.length} voxels for a [${series.shape}] series`);
  }
  const data = new Uint8Array(Z * Y * X);
  for (let z = 0; z < Z; z++) {
    for (let r = 0; r < Y; r++) {
      for (let c = 0; c < X; c++) data[((Z - 1 - z) * Y + (Y - 1 - r)) * X + c] = mask[(z * Y + r) * X + c];
    }
  }
  const [dz, dy, dx] = series.spacing;
  const [rowDir, colDir, zDir] = series.direction;
  // LPS position of NIfTI voxel (i, j, k) = origin + i dx rowDir + (Y-1-j) dy colDir + (Z-1-k) dz zDir.
  const colI = rowDir.map((v) => v * dx), colJ = colDir.map((v) => -v * dy), colK = zDir.map((v) => -v * dz);
  const t = series.origin.map((o, a) => o + (Y - 1) * dy * colDir[a] + (Z - 1) * dz * zDir[a]);
  const lpsToRas = [-1, -1, 1];
  const affine = [0, 1, 2].map((
    a,
  ) => [colI[a] * lpsToRas[a], colJ[a] * lpsToRas[a], colK[a] * lpsToRas[a], t[a] * lpsToRas[a]]);
  affine.push([0, 0, 0, 1]);
  return { data, shape: [X, Y, Z], affine, spacing: [dx, dy, dz] };
}

/**
 * @file The RSNA 2022 dataset layout: `train_images/<StudyInstanceUID>/*.dcm`, `segmentations/<uid>.nii`,
 * `train.csv` (StudyInstanceUID, patient_overall, C1..C7), submission row ids `<uid>_C1` ..
 * `<uid>_patient_overall`, and stratified folds. CSV is parsed with csv-parse.
 */
import { parse } from "csv-parse/sync";

/** The 8 targets in the seed's order: patient_overall, then C1..C7. */
export const TARGETS = ["patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7"] as const;

/** One row of train.csv. */
export interface TrainRow {
  uid: string;
  /** [patient_overall, C1..C7] as 0/1. */
  labels: number[];
}

/** A CSV file's rows by column name, with `columns` required; errors name the file and the problem. */
async function readCsvRecords(path: string, columns: readonly string[]): Promise<Record<string, string>[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as Error).message})`);
  }
  let records: Record<string, string>[];
  try {
    records = parse(text, { columns: true, skip_empty_lines: true, trim: true });
  } catch (e) {
    throw new Error(`${path}: malformed CSV (${(e as Error).message})`);
  }
  if (records.length) {
    const missing = columns.filter((c) => !(c in records[0]));
    if (missing.length) throw new Error(`${path}: missing column(s) ${missing.join(", ")}`);
  }
  return records;
}

/** Parses train.csv; errors name the file, the line and the problem. */
export async function readTrainCsv(path: string): Promise<TrainRow[]> {
  const records = await readCsvRecords(path, ["StudyInstanceUID", ...TARGETS]);
  return records.map((r, i) => {
    const labels = TARGETS.map((t) => {
      const v = r[t];
      if (v !== "0" && v !== "1") throw new Error(`${path}: line ${i + 2}: ${t} is "${v}", expected 0 or 1`);
      return Number(v);
    });
    if (!r.StudyInstanceUID) throw new Error(`${path}: line ${i + 2}: empty StudyInstanceUID`);
    return { uid: r.StudyInstanceUID, labels };
  });
}

/** One row of train_bounding_boxes.csv: a fracture's box on one slice (pixels; x a column, y a row). */
export interface BoundingBox {
  x: number;
  y: number;
  width: number;
  height: number;
  /** The number in the slice's file name. */
  sliceNumber: number;
}

/** Parses train_bounding_boxes.csv into boxes by study; errors name the file, the line and the problem. */
export async function readBoundingBoxes(path: string): Promise<Map<string, BoundingBox[]>> {
  const cols = ["x", "y", "width", "height", "slice_number"] as const;
  const records = await readCsvRecords(path, ["StudyInstanceUID", ...cols]);
  const out = new Map<string, BoundingBox[]>();
  records.forEach((r, i) => {
    const v = cols.map((c) => {
      const n = Number(r[c]);
      if (r[c] === "" || !Number.isFinite(n) || n < 0) {
        throw new Error(`${path}: line ${i + 2}: ${c} is "${r[c]}", expected a number >= 0`);
      }
      return n;
    });
    if (!r.StudyInstanceUID) throw new Error(`${path}: line ${i + 2}: empty StudyInstanceUID`);
    if (!Number.isInteger(v[4])) {
      throw new Error(`${path}: line ${i + 2}: slice_number ${v[4]} is not an integer`);
    }
    const list = out.get(r.StudyInstanceUID) ?? [];
    list.push({ x: v[0], y: v[1], width: v[2], height: v[3], sliceNumber: v[4] });
    out.set(r.StudyInstanceUID, list);
  });
  return out;
}

/** A box on one slice of a cube: slice z, rows [y0, y1), columns [x0, x1) (pixels a box covers in part count). */
export interface SliceRect {
  z: number;
  y: [number, number];
  x: [number, number];
}

/**
 * A study's boxes on its full-resolution cube [Z, H, W], slices found by their file numbers (`sliceNumbers`
 * of the cache header), clipped to the slice; errors name the study and the problem.
 */
export function boxRects(
  uid: string,
  boxes: readonly BoundingBox[],
  shape: readonly [number, number, number],
  sliceNumbers: readonly (number | null)[] | undefined,
): SliceRect[] {
  const [Z, H, W] = shape;
  if (!sliceNumbers || sliceNumbers.length !== Z) {
    throw new Error(
      `${uid}: the cache does not record its slices' file numbers; preprocess it again to use its boxes`,
    );
  }
  const zOf = new Map<number, number>();
  sliceNumbers.forEach((n, z) => n !== null && zOf.set(n, z));
  return boxes.map((b) => {
    const z = zOf.get(b.sliceNumber);
    if (z === undefined) {
      throw new Error(`${uid}: a box is on slice_number ${b.sliceNumber}, which no file has`);
    }
    const x0 = Math.max(0, Math.floor(b.x)), x1 = Math.min(W, Math.ceil(b.x + b.width));
    const y0 = Math.max(0, Math.floor(b.y)), y1 = Math.min(H, Math.ceil(b.y + b.height));
    return { z, y: [y0, Math.max(y0, y1)], x: [x0, Math.max(x0, x1)] };
  });
}

/** A study's boxes ({@link boxRects}) as a map on its full-resolution cube [Z, H, W]: 1 inside a box, 0 elsewhere. */
export function boxMap(
  uid: string,
  boxes: readonly BoundingBox[],
  shape: readonly [number, number, number],
  sliceNumbers: readonly (number | null)[] | undefined,
): Uint8Array {
  const [Z, H, W] = shape;
  const map = new Uint8Array(Z * H * W);
  for (const r of boxRects(uid, boxes, shape, sliceNumbers)) {
    for (let y = r.y[0]; y < r.y[1]; y++) map.fill(1, (r.z * H + y) * W + r.x[0], (r.z * H + y) * W + r.x[1]);
  }
  return map;
}

/** One study of a dataset folder. */
export interface Study {
  uid: string;
  dir: string;
  /** Path of its segmentation, when there is one. */
  mask: string | null;
  labels: number[] | null;
}

/** Lists the studies under `root` (train_images), joined with train.csv and segmentations/ when present. */
export async function listStudies(root: string): Promise<Study[]> {
  const labels = new Map<string, number[]>();
  try {
    for (const r of await readTrainCsv(`${root}/train.csv`)) labels.set(r.uid, r.labels);
  } catch (e) {
    if (!(e as Error).message.includes("cannot read")) throw e;
  }
  const studies: Study[] = [];
  try {
    for await (const e of Deno.readDir(`${root}/train_images`)) {
      if (!e.isDirectory || e.name.endsWith(".partial")) continue;
      const mask = `${root}/segmentations/${e.name}.nii`;
      const hasMask = await Deno.stat(mask).then(() => true, () => false);
      studies.push({
        uid: e.name,
        dir: `${root}/train_images/${e.name}`,
        mask: hasMask ? mask : null,
        labels: labels.get(e.name) ?? null,
      });
    }
  } catch (e) {
    throw new Error(`${root}: no train_images folder (${(e as Error).message})`);
  }
  return studies.sort((a, b) => (a.uid < b.uid ? -1 : 1));
}

/** Submission row ids of a study, in the competition's naming: `<uid>_C1` .. `<uid>_C7`, `<uid>_patient_overall`. */
export function rowIds(uid: string): string[] {
  return [...TARGETS.slice(1), TARGETS[0]].map((t) => `${uid}_${t}`);
}

/** Splits a row id at its last target suffix into uid and target. */
export function parseRowId(id: string): { uid: string; target: string } {
  for (const t of TARGETS) if (id.endsWith(`_${t}`)) return { uid: id.slice(0, -t.length - 1), target: t };
  throw new Error(`row id "${id}" does not end in _C1.._C7 or _patient_overall`);
}

/** Assigns folds 0..k-1, stratified by patient_overall, shuffled by `seed`. */
export function makeFolds(rows: TrainRow[], k: number, seed = 0): Map<string, number> {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const out = new Map<string, number>();
  for (const cls of [0, 1]) {
    const group = rows.filter((r) => r.labels[0] === cls).map((r) => r.uid);
    for (let i = group.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [group[i], group[j]] = [group[j], group[i]];
    }
    group.forEach((uid, i) => out.set(uid, i % k));
  }
  return out;
}

/** Writes a folds file (`StudyInstanceUID,fold`), atomically. */
export async function writeFoldsCsv(path: string, folds: Map<string, number>): Promise<void> {
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(
    tmp,
    ["StudyInstanceUID,fold", ...[...folds].map(([u, f]) => `${u},${f}`)].join("\n") + "\n",
  );
  await Deno.rename(tmp, path);
}

/** Reads a folds file: `StudyInstanceUID` (or the seed's `cube_id`) and `fold` columns. */
export async function readFoldsCsv(path: string): Promise<Map<string, number>> {
  let records: Record<string, string>[];
  try {
    records = parse(await Deno.readTextFile(path), { columns: true, skip_empty_lines: true, trim: true });
  } catch (e) {
    throw new Error(`${path}: cannot read folds (${(e as Error).message})`);
  }
  const out = new Map<string, number>();
  records.forEach((r, i) => {
    const uid = r.StudyInstanceUID ?? r.cube_id;
    const f = Number(r.fold);
    if (!uid || !Number.isInteger(f)) {
      throw new Error(`${path}: line ${i + 2}: needs StudyInstanceUID (or cube_id) and an integer fold`);
    }
    out.set(uid, f);
  });
  return out;
}

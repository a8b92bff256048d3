/**
 * @file Submission files (`row_id,fractured`, row ids `<uid>_C1`..`<uid>_C7`, `<uid>_patient_overall`):
 * reading with strict checks, atomic writing in the competition's row order, scoring against train.csv
 * with the shared metric (infer/metric.ts), and the score of a constant prediction (the best one:
 * infer/calibrate.ts).
 */
import { parse } from "csv-parse/sync";
import { parseRowId, readTrainCsv, rowIds, TARGETS } from "../data/rsna.ts";
import { writeFileAtomic } from "../io/files.ts";
import { type CompetitionScore, competitionScore } from "./metric.ts";

/** A plain decimal number (no hex, no "Infinity", no empty string, which Number() would accept). */
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Reads a submission into uid -> 8 probabilities (order patient_overall, C1..C7). Errors name the file and
 * the line or row id: a header other than the columns row_id and fractured, malformed row ids, values that
 * are not numbers in [0, 1], duplicate rows, and studies with some of their 8 rows missing.
 */
export async function readSubmission(path: string): Promise<Map<string, number[]>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read the submission (${(e as Error).message})`);
  }
  return parseSubmission(text, path);
}

/** {@link readSubmission} on text already in memory; `path` names errors. */
export function parseSubmission(text: string, path = "<submission>"): Map<string, number[]> {
  let rows: { record: string[]; info: { lines: number } }[];
  try {
    rows = parse(text, { info: true, skip_empty_lines: true, trim: true, bom: true });
  } catch (e) {
    throw new Error(`${path}: malformed CSV (${(e as Error).message})`);
  }
  if (!rows.length) throw new Error(`${path}: empty file (expected the header row_id,fractured)`);
  const header = rows[0].record;
  const idCol = header.indexOf("row_id"), pCol = header.indexOf("fractured");
  if (header.length !== 2 || idCol < 0 || pCol < 0) {
    throw new Error(`${path}: line 1: header is "${header.join(",")}", expected "row_id,fractured"`);
  }
  const out = new Map<string, number[]>();
  const seen = new Map<string, number>();
  for (const { record, info } of rows.slice(1)) {
    const line = info.lines;
    const id = record[idCol], raw = record[pCol];
    if (!id) throw new Error(`${path}: line ${line}: empty row_id`);
    let uid: string, target: string;
    try {
      ({ uid, target } = parseRowId(id));
    } catch (e) {
      throw new Error(`${path}: line ${line}: ${(e as Error).message}`);
    }
    if (!uid) throw new Error(`${path}: line ${line}: row id "${id}" has an empty study uid`);
    const prev = seen.get(id);
    if (prev !== undefined) {
      throw new Error(`${path}: line ${line}: duplicate row ${id} (first on line ${prev})`);
    }
    seen.set(id, line);
    const p = NUMBER.test(raw ?? "") ? Number(raw) : NaN;
    if (!(p >= 0 && p <= 1)) {
      throw new Error(`${path}: line ${line}: row ${id}: fractured is "${raw}", expected a number in [0, 1]`);
    }
    let v = out.get(uid);
    if (!v) out.set(uid, v = new Array(8).fill(NaN));
    v[TARGETS.indexOf(target as (typeof TARGETS)[number])] = p;
  }
  for (const [uid, v] of out) {
    const missing = TARGETS.filter((_, j) => Number.isNaN(v[j])).map((t) => `${uid}_${t}`);
    if (missing.length) throw new Error(`${path}: study ${uid} lacks row(s) ${missing.join(", ")}`);
  }
  return out;
}

/**
 * Writes a submission atomically: header `row_id,fractured`, then per study (in the map's order) its 8 rows
 * in the competition's order C1..C7, patient_overall. `preds` values are in the order patient_overall,
 * C1..C7, each a probability in [0, 1].
 */
export async function writeSubmission(path: string, preds: Map<string, ArrayLike<number>>): Promise<void> {
  await writeFileAtomic(path, new TextEncoder().encode(submissionCsv(preds, path)), "submission");
}

/** The text {@link writeSubmission} writes (`path` names it in errors); no file access. */
export function submissionCsv(preds: Map<string, ArrayLike<number>>, path = "<submission>"): string {
  const lines = ["row_id,fractured"];
  for (const [uid, p] of preds) {
    if (!uid || /[,"\r\n]/.test(uid)) throw new Error(`writeSubmission: ${path}: bad study uid "${uid}"`);
    if (!p || p.length !== 8) throw new Error(`writeSubmission: ${path}: study ${uid} needs 8 probabilities`);
    const ids = rowIds(uid);
    for (const id of ids) {
      const j = TARGETS.indexOf(parseRowId(id).target as (typeof TARGETS)[number]);
      const v = p[j];
      if (!(typeof v === "number" && v >= 0 && v <= 1)) {
        throw new Error(`writeSubmission: ${path}: ${id} is ${v}, expected a probability in [0, 1]`);
      }
      lines.push(`${id},${v}`);
    }
  }
  return lines.join("\n") + "\n";
}

/**
 * A submission file and the labels of its studies in train.csv: every study of the submission must be in
 * the truth (an error lists the unknown ones); truth studies absent from the submission are left out.
 */
export async function readScored(
  predPath: string,
  truthPath: string,
): Promise<{ pred: Map<string, number[]>; truth: Map<string, number[]> }> {
  const pred = await readSubmission(predPath);
  const all = new Map((await readTrainCsv(truthPath)).map((r) => [r.uid, r.labels]));
  const unknown = [...pred.keys()].filter((u) => !all.has(u));
  if (unknown.length) {
    throw new Error(
      `${predPath}: ${unknown.length} stud${unknown.length > 1 ? "ies" : "y"} not in ${truthPath}: ${
        unknown.slice(0, 5).join(", ")
      }${unknown.length > 5 ? ", ..." : ""}`,
    );
  }
  if (!pred.size) throw new Error(`${predPath}: no rows to score`);
  return { pred, truth: new Map([...pred.keys()].map((u) => [u, all.get(u)!])) };
}

/** Scores a submission file against train.csv ({@link readScored}'s rules). */
export async function scoreSubmission(predPath: string, truthPath: string): Promise<CompetitionScore> {
  const { pred, truth } = await readScored(predPath, truthPath);
  return competitionScore(pred, truth);
}

/** The competition score of predicting the same 8 `probabilities` for every study of `truth`. */
export function constantScore(
  probabilities: readonly number[],
  truth: Map<string, ArrayLike<number>>,
): number {
  return competitionScore(new Map([...truth.keys()].map((u) => [u, probabilities])), truth).score;
}

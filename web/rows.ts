/**
 * @file The rows of the page's probability table, apart from the DOM so that they can be tested in Deno. A
 * vertebra the segmentor did not find (no predicted voxels, so no box in the study's metadata) reads
 * "not found", as in the HTML report (infer/report.ts), instead of the classifier's probability for a crop
 * that holds no vertebra.
 */
import { NOT_FOUND, OUTPUT_NAMES } from "../infer/report.ts";

/** One row of the table. */
export interface ProbabilityRow {
  name: string;
  /** The probability, or null for a vertebra that was not found. */
  probability: number | null;
  /** What the row shows: the probability to 4 decimals, or "not found". */
  text: string;
}

/**
 * The rows for one study: `probabilities` as predictStudy returns them (patient_overall, C1..C7), `boxes`
 * the metadata's boxes by vertebra "1".."7" (a vertebra has one when the segmentor predicted voxels of it).
 */
export function probabilityRows(probabilities: number[], boxes: Record<string, unknown>): ProbabilityRow[] {
  if (probabilities.length !== OUTPUT_NAMES.length) {
    throw new Error(
      `probabilityRows: ${probabilities.length} probabilities, expected ${OUTPUT_NAMES.length}`,
    );
  }
  return OUTPUT_NAMES.map((name, j) => {
    const found = j === 0 || !!boxes[String(j)];
    const p = probabilities[j];
    return found
      ? { name, probability: p, text: p.toFixed(4) }
      : { name, probability: null, text: NOT_FOUND };
  });
}

/**
 * @file Judging an inference run against ground truth, so that a score can be read: the competition score
 * beside the best constant prediction (the constant that minimises the metric over the training labels when
 * they can be found, else over the truth itself, an oracle), and the per-level dice of the predicted vertebra
 * masks for the studies that have a ground-truth mask.
 */
import { readTrainCsv } from "../data/rsna.ts";
import { niftiToVolume, readNifti } from "../data/nifti.ts";
import { type CompetitionScore, competitionScore, studyLoss } from "./metric.ts";
import { differenceText, pairedBootstrap, type PairedInterval } from "./bootstrap.ts";
import { constantScore } from "./score.ts";
import { bestConstant } from "./calibrate.ts";
import { type DiceSummary, levelDice, meanLevelDice } from "./dice.ts";
import type { StudyRef } from "./discover.ts";

/** How the baseline is named when its rates come from the scored studies themselves. */
export const ORACLE_SOURCE = "the best constant of the held-out labels themselves (an oracle baseline)";

/** The best constant prediction and where its probabilities come from. */
export interface ConstantBaseline {
  /** Its competition score on the scored studies. */
  score: number;
  /** The 8 probabilities predicted for every study (patient_overall, C1..C7). */
  probabilities: number[];
  /** Where the probabilities come from, for a reader. */
  source: string;
}

/** Per-level dice over the studies with a ground-truth mask, and each study's. */
export type DiceResult = DiceSummary & { perStudy: Record<string, (number | null)[]> };

/** What score.json holds: the competition score, the baseline beside it and, with masks, the dice. */
export interface Evaluation {
  score: CompetitionScore;
  constant: ConstantBaseline;
  /** score / constant score: below 1 beats the constant. */
  ratio: number;
  /** score - constant score with its paired bootstrap interval over the scored studies. */
  difference: PairedInterval;
  /** Null when no scored study had a ground-truth mask. */
  dice: DiceResult | null;
}

async function isFile(p: string): Promise<boolean> {
  return await Deno.stat(p).then((s) => s.isFile, () => false);
}

/**
 * The ground-truth mask of a study: `<masks>/<uid>.nii` (or .nii.gz) when `masks` is given, else where the
 * RSNA layout keeps it, `<root>/segmentations/<uid>.nii` for a study folder `<root>/train_images/<uid>` (or
 * test_images); null when there is none.
 */
export async function truthMaskPath(ref: StudyRef, masks?: string): Promise<string | null> {
  let dir = masks;
  if (!dir) {
    const parts = ref.dir.replace(/\/+$/, "").split("/");
    // Only inside the RSNA layout: a plain folder of studies has no known place for masks.
    if (parts.length < 2 || !/^(train|test)_images$/.test(parts[parts.length - 2])) return null;
    dir = [...parts.slice(0, -2), "segmentations"].join("/");
  }
  for (const ext of [".nii", ".nii.gz"]) {
    if (await isFile(`${dir}/${ref.uid}${ext}`)) return `${dir}/${ref.uid}${ext}`;
  }
  return null;
}

/**
 * Per-level dice (C1..C7) of predicted labels on the study's own [Z, Y, X] grid against the mask at
 * `path`, read with the RSNA mask rule (data/nifti.ts niftiToVolume; labels above 7 are background).
 */
export async function studyDice(
  path: string,
  labels: Uint8Array,
  shape: readonly [number, number, number],
): Promise<(number | null)[]> {
  return levelDice(labels, niftiToVolume(await readNifti(path), shape, path));
}

async function readJson(path: string): Promise<Record<string, unknown> | null> {
  return await Deno.readTextFile(path).then((t) => JSON.parse(t), () => null);
}

/**
 * The training labels of a classifier among `--weights` (comma-separated): the `labels` file a classifier
 * run folder's config.json names, in a run folder or a `train all` folder; null when none exists now.
 */
export async function findTrainLabels(weights: string): Promise<string | null> {
  for (const spec of weights.split(",").map((s) => s.trim()).filter(Boolean)) {
    const dirs = [spec];
    await Array.fromAsync(Deno.readDir(spec)).then(
      (es) => es.filter((e) => e.isDirectory).forEach((e) => dirs.push(`${spec}/${e.name}`)),
      () => {}, // a checkpoint file: its folder is not searched
    );
    for (const d of dirs.sort()) {
      const c = await readJson(`${d}/config.json`);
      if (c?.stage === "cls" && typeof c.labels === "string" && await isFile(c.labels)) return c.labels;
    }
  }
  return null;
}

/**
 * The best constant prediction for `truth`: the 8 probabilities with the lowest score over `trainLabels` (a
 * train.csv; infer/calibrate.ts bestConstant) when given, else over the truth itself (an oracle: it knows
 * the held-out prevalence).
 */
export async function constantBaseline(
  truth: Map<string, ArrayLike<number>>,
  trainLabels?: string | null,
): Promise<ConstantBaseline> {
  if (trainLabels) {
    const rows = await readTrainCsv(trainLabels);
    const probabilities = bestConstant(rows.map((r) => r.labels));
    const source = `the best constant of the training labels ${trainLabels} (${rows.length} studies; ` +
      `each target's positive rate weighted as the metric weighs it)`;
    return { score: constantScore(probabilities, truth), probabilities, source };
  }
  const probabilities = bestConstant([...truth.values()]);
  return { score: constantScore(probabilities, truth), probabilities, source: ORACLE_SOURCE };
}

/**
 * score - constant score over the studies of `pred`, with its 95 % paired bootstrap interval (infer/bootstrap.ts):
 * whether the scored studies are enough to tell the predictions from the constant `probabilities`.
 */
export function versusConstant(
  pred: Map<string, ArrayLike<number>>,
  truth: Map<string, ArrayLike<number>>,
  probabilities: readonly number[],
): PairedInterval {
  const uids = [...pred.keys()];
  return pairedBootstrap(
    uids.map((u) => studyLoss(pred.get(u)!, truth.get(u)!)),
    uids.map((u) => studyLoss(probabilities, truth.get(u)!)),
  );
}

/**
 * Scores predictions against a train.csv (every predicted study must be in it), beside the best constant
 * prediction, with the mean per-level dice of the studies in `dice` (uid -> C1..C7, those with a mask).
 */
export async function evaluate(o: {
  preds: Map<string, number[]>;
  truth: string;
  trainLabels?: string | null;
  dice: Map<string, (number | null)[]>;
}): Promise<Evaluation> {
  const all = new Map((await readTrainCsv(o.truth)).map((r) => [r.uid, r.labels]));
  const missing = [...o.preds.keys()].filter((u) => !all.has(u));
  if (missing.length) {
    throw new Error(`${o.truth}: no labels for ${missing.length} studies (e.g. ${missing[0]})`);
  }
  const truth = new Map([...o.preds.keys()].map((u) => [u, all.get(u)!]));
  const score = competitionScore(o.preds, truth);
  const constant = await constantBaseline(truth, o.trainLabels);
  const measured = [...o.dice].filter(([u]) => o.preds.has(u));
  const dice = measured.length
    ? { ...meanLevelDice(measured.map(([, d]) => d)), perStudy: Object.fromEntries(measured) }
    : null;
  const difference = versusConstant(o.preds, truth, constant.probabilities);
  return { score, constant, ratio: score.score / constant.score, difference, dice };
}

function fmt(v: number | null): string {
  return v === null ? "-" : v.toFixed(3);
}

/**
 * The one line a user judges a run by: "competition score X vs Y for the best constant prediction (ratio Z;
 * lower is better); segmentation dice C1..C7 a b c ..., mean m".
 */
export function summaryLine(ev: Evaluation): string {
  const d = ev.dice;
  const dice = d
    ? `segmentation dice C1..C7 ${d.perLevel.map(fmt).join(" ")}, mean ${fmt(d.mean)}`
    : "no ground-truth masks, so no segmentation dice";
  return `competition score ${ev.score.score.toFixed(4)} vs ${
    ev.constant.score.toFixed(4)
  } for the best constant prediction (ratio ${ev.ratio.toFixed(2)}; lower is better; ${
    differenceText(ev.difference)
  }); ${dice}`;
}

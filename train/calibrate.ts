/**
 * @file `train calibrate`: a classifier checkpoint's study probabilities on its run's validation fold, its
 * calibration fitted there (infer/calibrate.ts) and stored in the checkpoint's metadata, where inference
 * finds it; and the figures a reader judges it by: raw, calibrated (in-sample and leave-one-study-out),
 * beside the best constant of the run's labels.
 *
 * The calibration's level (its prior) is the best constant of all the run's labelled studies, both folds:
 * the validation fold's labels are training data too, and the constant a model falls back to when it has
 * nothing to say is then the one it is judged against, estimated from every label at hand (the main job's
 * training fold alone left it 0.003 above that on the held-out phantoms). Leave-one-study-out refits the
 * prior without the study as well, so that figure stays out of sample; and it decides: a group (patient_overall,
 * the vertebrae) keeps its fitted slope only where its leave-one-out part of the score beats the constant's,
 * else it is stored at 0 (the main job's fold of 25 studies kept 0.28-0.38 of patient_overall in-sample that
 * leave-one-out said was worth nothing).
 */
import { openDevice } from "../mod.ts";
import { readCheckpointHost, saveCheckpoint } from "../io/files.ts";
import { modelFromCheckpoint } from "../infer/load.ts";
import { competitionScore } from "../infer/metric.ts";
import {
  applyCalibration,
  bestConstant,
  type Calibration,
  confirmSlopes,
  fitCalibration,
  groupScores,
} from "../infer/calibrate.ts";
import { clsFolds, clsStudies, clsValPredictions } from "./cls.ts";
import type { ClsConfig } from "./presets.ts";

/** What {@link calibrateCheckpoint} measured and stored. */
export interface CalibrationResult {
  calibration: Calibration;
  /** Competition score of the raw probabilities on the validation fold. */
  raw: number;
  /** ... of the calibrated ones (the stored calibration), fitted on the same fold (optimistic). */
  calibrated: number;
  /** ... with the fitted slopes, each study's from a calibration fitted without it (the honest figure). */
  leaveOneOut: number;
  /** The slopes as fitted; a group whose leave-one-out part did not beat the constant's is stored at 0. */
  fitted: Calibration["slope"];
  /** ... of the best constant of the run's other labelled studies, each study's without it. */
  constant: number;
  /** Where the constant comes from, for a reader. */
  constantFrom: string;
}

/**
 * Each study's probabilities through a calibration fitted on the other studies, around `prior(uid)` (the
 * prior without that study): an out-of-sample estimate of what calibrating on the whole fold gives on new
 * studies.
 */
export function leaveOneOutCalibrated(
  pred: Map<string, number[]>,
  truth: Map<string, number[]>,
  prior: (uid: string) => readonly number[],
): Map<string, number[]> {
  if (pred.size < 2) throw new Error("leaveOneOutCalibrated: needs at least 2 studies");
  return new Map(
    [...pred].map(([uid, p]) => {
      const rest = new Map([...pred].filter(([u]) => u !== uid));
      return [uid, applyCalibration(p, fitCalibration(rest, truth, prior(uid)))];
    }),
  );
}

/**
 * Fits the calibration of the classifier checkpoint `weights` on the validation fold of the classifier run
 * `runDir` (its config.json: cache, labels, folds, fold) and rewrites the checkpoint atomically with it in
 * the metadata (`calibration`); rerunning refits from the raw outputs, so it replaces an earlier one.
 */
export async function calibrateCheckpoint(weights: string, runDir: string): Promise<CalibrationResult> {
  let cfg: ClsConfig & { stage?: string; cache: string; labels: string; foldsFile: string };
  try {
    cfg = JSON.parse(await Deno.readTextFile(`${runDir}/config.json`));
  } catch (e) {
    throw new Error(`${runDir}/config.json: cannot read the run's configuration (${(e as Error).message})`);
  }
  if (cfg.stage !== "cls") {
    throw new Error(`${runDir}: not a classifier run (its config.json has stage ${cfg.stage})`);
  }
  const { studies } = await clsStudies(cfg.cache, cfg.labels);
  const folds = await clsFolds(cfg.foldsFile, studies, cfg.folds);
  const val = studies.filter((s) => folds.get(s.uid) === cfg.fold);
  const tr = studies.filter((s) => folds.get(s.uid) !== cfg.fold);
  if (val.length < 2 || !tr.length) {
    throw new Error(
      `${runDir}: fold ${cfg.fold} has ${val.length} validation and ${tr.length} training studies ` +
        `(calibration needs at least 2 and 1)`,
    );
  }
  // Read once: the model is built from these tensors, and they are written back with the calibration.
  const { tensors, meta } = await readCheckpointHost(weights);
  const device = await openDevice();
  let pred: Map<string, number[]>, truth: Map<string, number[]>;
  const { model } = modelFromCheckpoint(tensors, meta, weights, device);
  try {
    ({ pred, truth } = await clsValPredictions(model as never, cfg.cache, val, cfg));
  } finally {
    model.dispose();
    device.destroy();
  }
  const prior = bestConstant(studies.map((s) => s.labels));
  // Each validation study's prior without it: its leave-one-out calibration's level and its constant.
  const constant = new Map(
    [...pred.keys()].map((u) => [u, bestConstant(studies.filter((s) => s.uid !== u).map((s) => s.labels))]),
  );
  const fitted = fitCalibration(pred, truth, prior);
  const loo = leaveOneOutCalibrated(pred, truth, (u) => constant.get(u)!);
  // A group keeps its slope only where leave-one-study-out beats the constant on its targets.
  const calibration = confirmSlopes(fitted, groupScores(loo, truth), groupScores(constant, truth));
  const calibrated = new Map([...pred].map(([u, p]) => [u, applyCalibration(p, calibration)]));
  await saveCheckpoint(weights, tensors, { ...meta, calibration }, "calibrated checkpoint");
  return {
    calibration,
    fitted: fitted.slope,
    raw: competitionScore(pred, truth).score,
    calibrated: competitionScore(calibrated, truth).score,
    leaveOneOut: competitionScore(loo, truth).score,
    constant: competitionScore(constant, truth).score,
    constantFrom: `the best constant of the other ${studies.length - 1} labelled studies of ${cfg.labels}`,
  };
}

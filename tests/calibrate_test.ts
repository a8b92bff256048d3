/**
 * The best constant prediction and the classifier's calibration (infer/calibrate.ts), each against the
 * metric itself (competitionScore, checked against sklearn in metric_test.ts) rather than against the
 * formulas they implement: the best constant by hand on four studies and as the minimiser of the score
 * (every target moved either way scores worse); the slopes as the minimisers, found by golden-section
 * search, of the score of the calibrated predictions plus the ridge; a model ranking its studies backwards
 * gets slope 0 and predicts the constant exactly; a perfectly separating one a finite slope; leave-one-out
 * equals fitting without the study; the score's two group parts add up to it, and a group keeps its slope
 * only where its out-of-sample part beats the constant's; malformed metadata is refused naming the file. End
 * to end: `train cls`,
 * `average` and `calibrate` on four phantom studies leave a checkpoint whose calibration inference loads.
 */
import {
  applyCalibration,
  bestConstant,
  type Calibration,
  CALIBRATION_RIDGE,
  confirmSlopes,
  fitCalibration,
  groupScores,
  parseCalibration,
} from "../infer/calibrate.ts";
import { competitionScore, targetWeight } from "../infer/metric.ts";
import { constantScore } from "../infer/score.ts";
import { leaveOneOutCalibrated } from "../train/calibrate.ts";
import { assertClose, assertThrows, prng } from "./helpers.ts";
import { loadModel } from "../infer/load.ts";
import { readSegMetaFile } from "../infer/meta.ts";
import { saveCheckpoint } from "../io/files.ts";
import { models, nn, openDevice } from "../mod.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { preprocessDataset } from "../data/preprocess.ts";
import { readTrainCsv, writeFoldsCsv } from "../data/rsna.ts";

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const logit = (p: number) => Math.log(p / (1 - p));

/** `n` studies: labels drawn from a per-study risk x, the model's probability sigmoid(k x + offset + noise). */
function fold(seed: number, n: number, k: number, noise: number) {
  const rnd = prng(seed);
  const pred = new Map<string, number[]>(), truth = new Map<string, number[]>();
  for (let s = 0; s < n; s++) {
    const x = Array.from({ length: 8 }, () => 2 * rnd() - 1);
    const y = x.map((v, j) => (rnd() < sigmoid(2 * v + (j ? -1.5 : 0)) ? 1 : 0));
    pred.set(`s${s}`, x.map((v) => sigmoid(k * v - 0.5 + noise * (2 * rnd() - 1))));
    truth.set(`s${s}`, y);
  }
  return { pred, truth };
}

/** The minimiser of a unimodal f on [lo, hi] (golden-section search, to ~1e-9). */
function argmin(f: (x: number) => number, lo: number, hi: number): number {
  const g = (Math.sqrt(5) - 1) / 2;
  let a = lo, b = hi;
  while (b - a > 1e-9) {
    const c = b - g * (b - a), d = a + g * (b - a);
    if (f(c) < f(d)) b = d;
    else a = c;
  }
  return (a + b) / 2;
}

Deno.test("bestConstant: by hand, and no target can move without a worse score", () => {
  const labels = [[1, 0, 1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [
    1,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
  ]];
  // Row weight sums W: 14 + 2 + 1 + 1 + 1 + 1 + 1 + 2 = 23; 14; 28; 14 + 2 + 6 = 22. C1 is positive in the
  // third study only: (2/28) / (1/23 + 1/14 + 2/28 + 1/22).
  const c1 = (2 / 28) / (1 / 23 + 1 / 14 + 2 / 28 + 1 / 22);
  const overall = (14 / 23 + 14 / 28 + 14 / 22) / (14 / 23 + 7 / 14 + 14 / 28 + 14 / 22);
  const best = bestConstant(labels);
  assertClose([best[0], best[1]], [overall, c1], "by hand", 0, 1e-15);
  const truth = new Map(labels.map((l, i) => [`s${i}`, l]));
  const at = constantScore(best, truth);
  for (let j = 0; j < 8; j++) {
    for (const d of [-1e-3, 1e-3]) {
      const moved = best.slice();
      moved[j] += d;
      if (!(constantScore(moved, truth) > at)) throw new Error(`target ${j} moved by ${d} scores no worse`);
    }
  }
  // Above the plain positive rate (1/4 for C1): the metric weighs positives twice.
  if (!(c1 > 0.25)) throw new Error(`C1 ${c1}`);
  // A target never (or always) positive sits at the outputs' clip.
  assertClose(
    bestConstant([[0, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 1]]).slice(1, 3),
    [0.01, 0.01],
    "clip",
    0,
    0,
  );
  assertClose(bestConstant([[1, 1, 1, 1, 1, 1, 1, 1]]), new Array(8).fill(0.99), "clip high", 0, 0);
  assertThrows(() => bestConstant([]), "no labels");
});

Deno.test("fitCalibration: each slope minimises the calibrated score plus the ridge", () => {
  for (const [seed, k, noise] of [[1, 3, 0.5], [2, 0.7, 1], [3, 1.5, 2]]) {
    const { pred, truth } = fold(seed, 40, k, noise);
    const prior = bestConstant([...fold(seed + 100, 60, 1, 0).truth.values()]);
    const c = fitCalibration(pred, truth, prior);
    const center = Array.from(
      { length: 8 },
      (_, j) => [...pred.values()].reduce((a, p) => a + logit(p[j]), 0) / 40,
    );
    assertClose(c.center, center, "center", 1e-12, 1e-12);
    // The group's weight: sum over studies of w_sj / W_s, what the ridge is scaled by.
    const weight = (group: number[]) =>
      [...truth.values()].reduce((a, y) => {
        const W = y.reduce((s, v, j) => s + targetWeight(j, v), 0);
        return a + group.reduce((s, j) => s + targetWeight(j, y[j]) / W, 0);
      }, 0);
    const objective = (slope: Calibration["slope"], group: number[], a: number) => {
      const cal = { ...c, slope };
      const q = new Map([...pred].map(([u, p]) => [u, applyCalibration(p, cal)]));
      return competitionScore(q, truth).score * pred.size + 0.5 * CALIBRATION_RIDGE * weight(group) * a * a;
    };
    const overall = argmin((a) => objective({ ...c.slope, overall: a }, [0], a), 0, 10);
    const vertebrae = argmin((a) => objective({ ...c.slope, vertebrae: a }, [1, 2, 3, 4, 5, 6, 7], a), 0, 10);
    assertClose(
      [c.slope.overall, c.slope.vertebrae],
      [overall, vertebrae],
      `seed ${seed} slopes`,
      1e-6,
      1e-6,
    );
    const raw = competitionScore(pred, truth).score;
    const calibrated = competitionScore(
      new Map([...pred].map(([u, p]) => [u, applyCalibration(p, c)])),
      truth,
    );
    if (!(calibrated.score < raw && calibrated.score < constantScore(prior, truth))) {
      throw new Error(
        `seed ${seed}: calibrated ${calibrated.score}, raw ${raw}, constant ${constantScore(prior, truth)}`,
      );
    }
  }
});

Deno.test("fitCalibration: a model ranking backwards predicts the constant; a separating one stays finite", () => {
  const { pred, truth } = fold(7, 30, 2, 0);
  const backwards = new Map([...pred].map(([u, p]) => [u, p.map((v) => 1 - v)]));
  const prior = bestConstant([...truth.values()]);
  const c = fitCalibration(backwards, truth, prior);
  assertClose([c.slope.overall, c.slope.vertebrae], [0, 0], "slopes", 0, 0);
  for (const p of backwards.values()) assertClose(applyCalibration(p, c), prior, "the constant", 0, 1e-15);
  // Labels equal to the model's own verdict: without the ridge the slope would grow without bound.
  const separated = new Map([...pred].map(([u, p]) => [u, p.map((v) => (v > 0.5 ? 1 : 0))]));
  const s = fitCalibration(pred, separated, bestConstant([...separated.values()]));
  if (!(s.slope.vertebrae > 1 && Number.isFinite(s.slope.vertebrae) && s.slope.vertebrae < 1e4)) {
    throw new Error(`separating slope ${s.slope.vertebrae}`);
  }
  // The same output for every study: nothing to fit, the constant.
  const flat = new Map([...pred.keys()].map((u) => [u, new Array(8).fill(0.3)]));
  const f = fitCalibration(flat, truth, prior);
  assertClose([f.slope.overall, f.slope.vertebrae], [0, 0], "flat", 0, 0);
  assertThrows(() => fitCalibration(new Map(), truth, prior), "no studies");
  assertThrows(() => fitCalibration(pred, new Map(), prior), "no labels for study s0");
  assertThrows(() => fitCalibration(pred, truth, [0.5]), "8 values");
});

Deno.test("leave-one-out: each study through the calibration fitted on the others, around their prior", () => {
  const { pred, truth } = fold(11, 12, 1, 1);
  const prior = (u: string) => bestConstant([...truth].filter(([v]) => v !== u).map(([, y]) => y));
  const loo = leaveOneOutCalibrated(pred, truth, prior);
  for (const u of ["s0", "s5", "s11"]) {
    const rest = new Map([...pred].filter(([v]) => v !== u));
    assertClose(loo.get(u)!, applyCalibration(pred.get(u)!, fitCalibration(rest, truth, prior(u))), u, 0, 0);
  }
  assertThrows(() => leaveOneOutCalibrated(new Map([...pred].slice(0, 1)), truth, prior), "at least 2");
});

Deno.test("groupScores adds up to the score; confirmSlopes keeps a group's slope only where it beats the constant", () => {
  const { pred, truth } = fold(5, 15, 1.5, 0.5);
  const [overall, vertebrae] = groupScores(pred, truth);
  assertClose([overall + vertebrae], [competitionScore(pred, truth).score], "the parts' sum", 0, 1e-12);
  // patient_overall's part from the metric: with 0.5 on every vertebra their part is ln 2 times their share
  // of each study's weight, by hand.
  const half = new Map([...pred].map(([u, p]) => [u, [p[0], ...new Array(7).fill(0.5)]]));
  let vert = 0;
  for (const y of truth.values()) {
    const w = y.map((v, j) => targetWeight(j, v)), W = w.reduce((a, v) => a + v, 0);
    vert += Math.LN2 * (W - w[0]) / W / truth.size;
  }
  assertClose([competitionScore(half, truth).score - vert], [overall], "patient_overall's part", 0, 1e-12);
  assertThrows(() => groupScores(new Map(), truth), "no studies");
  const c = fitCalibration(pred, truth, bestConstant([...truth.values()]));
  const kept = confirmSlopes(c, [0.1, 0.5], [0.2, 0.4]);
  if (kept.slope.overall !== c.slope.overall || kept.slope.vertebrae !== 0) {
    throw new Error(
      `expected overall ${c.slope.overall} kept and vertebrae 0, got ${JSON.stringify(kept.slope)}`,
    );
  }
  // A tie is not better: the constant stands.
  if (confirmSlopes(c, [0.2, 0.3], [0.2, 0.4]).slope.overall !== 0) throw new Error("a tie kept its slope");
  assertClose(kept.prior, c.prior, "prior unchanged", 0, 0);
});

Deno.test("parseCalibration: a stored calibration round-trips; malformed ones name the file", () => {
  const { pred, truth } = fold(5, 20, 1, 1);
  const c = fitCalibration(pred, truth, bestConstant([...truth.values()]));
  const back = parseCalibration(JSON.parse(JSON.stringify(c)), "x.safetensors");
  assertClose(
    applyCalibration(pred.get("s3")!, back),
    applyCalibration(pred.get("s3")!, c),
    "round trip",
    0,
    0,
  );
  for (
    const bad of [
      null,
      { ...c, prior: c.prior.slice(1) },
      { ...c, prior: [1, ...c.prior.slice(1)] },
      { ...c, center: [NaN, ...c.center.slice(1)] },
      { ...c, slope: { overall: -1, vertebrae: 0 } },
      { ...c, slope: undefined },
    ]
  ) assertThrows(() => parseCalibration(bad, "x.safetensors"), "x.safetensors: malformed calibration");
  assertThrows(() => applyCalibration([0.5], c), "8 probabilities");
});

Deno.test("train cls -> average -> calibrate: the checkpoint carries a calibration that inference loads", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "csn-calibrate-" });
  try {
    await writeSyntheticDataset({ out: `${tmp}/data`, studies: 4, seed: 9, size: 32, maskFraction: 1 });
    await preprocessDataset(`${tmp}/data`, `${tmp}/cache`, { workers: 1 });
    const device = await openDevice();
    const SEG = { model: "CSNUNet", encoder: "r26ir", baseChannels: 4, lastChannels: 4, size: 32 };
    nn.seedInit(3);
    const seg = new models.CSNUNet({ device, ...SEG, decoderFilters: [4, 4, 4, 4] });
    await saveCheckpoint(`${tmp}/seg.safetensors`, seg.stateDict(), {
      config: { model: { ...SEG, decoderFilters: [4, 4, 4, 4] } },
    });
    seg.dispose();
    const rows = await readTrainCsv(`${tmp}/data/train.csv`);
    await writeFoldsCsv(`${tmp}/folds.csv`, new Map(rows.map((r, i) => [r.uid, i % 2])));
    const run = `${tmp}/cls`, flags = ["--cache", `${tmp}/cache`, "--labels", `${tmp}/data/train.csv`];
    // --all-components stores the raw argmax; the default run predicts again with the largest components.
    const predict = (...extra: string[]) =>
      train("predict-seg", "--cache", `${tmp}/cache`, "--weights", `${tmp}/seg.safetensors`, ...extra);
    const postprocess = async () => (await readSegMetaFile(`${tmp}/cache`, rows[0].uid)).postprocess;
    const runs: [string[], number, string][] = [
      [["--all-components"], 4, "none"],
      [[], 4, "largest"],
      [[], 0, "largest"],
    ];
    for (const [extra, predicted, how] of runs) {
      const out = await predict(...extra);
      if (!out.includes(`predict-seg: ${predicted} studies predicted`)) throw new Error(`${extra}: ${out}`);
      if (await postprocess() !== how) throw new Error(`${extra}: postprocess ${await postprocess()}`);
    }
    await train(
      "cls",
      ...flags,
      "--folds",
      `${tmp}/folds.csv`,
      "--out",
      run,
      "--epochs",
      "2",
      "--crop",
      "8,32,32",
    );
    await train("average", "--run", run, "--best", "2");
    const first = await train("calibrate", "--run", run);
    for (const part of ["validation fold (2 studies)", "in-sample", "leave-one-study-out", "swa-best-2"]) {
      if (!first.includes(part)) throw new Error(`no "${part}" in:\n${first}`);
    }
    const { calibration, model } = await loadModel(`${run}/swa-best-2.safetensors`, device);
    model.dispose();
    device.destroy();
    const all = rows.map((r) => r.labels);
    assertClose(
      calibration!.prior,
      bestConstant(all),
      "prior: the best constant of both folds' labels",
      0,
      0,
    );
    if (calibration!.studies !== 2) throw new Error(`fitted on ${calibration!.studies} studies`);
    // A rerun refits from the raw outputs: the same figures, not a calibration of a calibration.
    if ((await train("calibrate", "--run", run)) !== first) throw new Error("a second calibration differs");
    // A validation fold of one study is refused by name (`train all` then leaves the classifier raw).
    await writeFoldsCsv(`${tmp}/folds.csv`, new Map(rows.map((r, i) => [r.uid, i === 0 ? 0 : 1])));
    await train("calibrate", "--run", run).then(
      () => {
        throw new Error("a one-study fold was calibrated");
      },
      (e: Error) => {
        if (!e.message.includes("fold 0 has 1 validation and 3 training studies")) throw e;
      },
    );
    await Deno.mkdir(`${tmp}/seg-run`);
    await Deno.writeTextFile(`${tmp}/seg-run/config.json`, JSON.stringify({ stage: "seg" }));
    await train("calibrate", "--run", `${tmp}/seg-run`, "--weights", `${tmp}/seg.safetensors`).then(
      () => {
        throw new Error("a segmentation run was calibrated");
      },
      (e: Error) => {
        if (!e.message.includes("not a classifier run")) throw e;
      },
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

/** Runs `deno task train ...`; resolves with its output, rejects with it when the exit code is not 0. */
async function train(...args: string[]): Promise<string> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../train/cli.ts", import.meta.url).pathname, ...args],
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  const out = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
  if (o.code !== 0) throw new Error(`train ${args[0]} exited ${o.code}:\n${out}`);
  return out.split("\n").filter((l) => l.startsWith("calibrate:")).join("\n") || out;
}

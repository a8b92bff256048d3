/**
 * `deno task infer` on phantom studies with tiny models (random weights saved as run checkpoints: the
 * pipeline's mechanics do not depend on what the models learned): the submission has 8 valid rows per
 * study, the masks sit on each study's own grid, reports reference nothing remote, a broken study is
 * reported while the others are written, --resume skips, and the classifier ensemble and flip TTA equal a
 * computation by hand from the same crops. With --truth: the index page and score.json carry the score
 * beside the best constant prediction, a per-study truth table and, for the studies with a ground-truth mask,
 * per-level dice equal to numpy's on the NIfTI files (nibabel); a study without a mask gets none.
 */
import { F, models, nn, noGrad, openDevice, tensor, tidy } from "../mod.ts";
import { readCheckpointHost, saveCheckpoint } from "../io/files.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { readNifti, volumeToNifti, writeNifti } from "../data/nifti.ts";
import { parseSubmission } from "../infer/score.ts";
import {
  calibrationLine,
  classifyStudy,
  flipLastAxis,
  INFER_DEFAULTS,
  predictStudy,
  segmentStudy,
} from "../infer/pipeline.ts";
import { keepLargestComponents } from "../data/components.ts";
import { applyCalibration } from "../infer/calibrate.ts";
import { encodeSafetensors } from "../io/safetensors.ts";
import { loadEnsemble } from "../infer/ensemble.ts";
import { loadStudy } from "../infer/study.ts";
import { predictVolume } from "../infer/segment.ts";
import { computeMeta } from "../infer/meta.ts";
import { clsValItemFromMemory, CropStacks } from "../infer/crops/read.ts";
import { aggregateStudy, competitionScore } from "../infer/metric.ts";
import { levelDice, meanLevelDice } from "../infer/dice.ts";
import { findTrainLabels, ORACLE_SOURCE, truthMaskPath } from "../infer/evaluate.ts";
import { readTrainCsv } from "../data/rsna.ts";
import { pyFixture } from "./helpers.ts";

const tmp = await Deno.makeTempDir({ prefix: "csn-infer-" });
const device = await openDevice();
const SEG = {
  model: "CSNUNet",
  encoder: "r26ir",
  baseChannels: 4,
  decoderFilters: [4, 4, 4, 4],
  lastChannels: 4,
  size: 64,
};
const CLS = { model: "CSNClassifier", encoder: "r26ir", baseChannels: 4, dropout: 0.5, crop: [8, 32] };

nn.seedInit(3);
const seg = new models.CSNUNet({ device, ...SEG, decoderFilters: [4, 4, 4, 4] });
await saveCheckpoint(`${tmp}/seg.safetensors`, seg.stateDict(), { config: { model: SEG } });
seg.dispose();
for (const [i, enc] of ["r26ir", "r26ip"].entries()) {
  nn.seedInit(10 + i);
  const c = new models.CSNClassifier({ device, encoder: enc, baseChannels: 4, numClasses: 8, dropout: 0.5 });
  await saveCheckpoint(`${tmp}/cls${i}.safetensors`, c.stateDict(), {
    config: { model: { ...CLS, encoder: enc } },
  });
  c.dispose();
}
await writeSyntheticDataset({ out: `${tmp}/data`, studies: 3, seed: 4, size: 64, maskFraction: 0 });
await Deno.mkdir(`${tmp}/data/train_images/zz-broken`);
await Deno.writeTextFile(`${tmp}/data/train_images/zz-broken/1.dcm`, "not a DICOM file");
const good = [...Deno.readDirSync(`${tmp}/data/train_images`)].map((e) => e.name).filter((n) =>
  n !== "zz-broken"
);
const weights = `${tmp}/seg.safetensors,${tmp}/cls0.safetensors,${tmp}/cls1.safetensors`;

// Ground-truth masks for two of the three good studies where the RSNA layout keeps them (segmentations/
// beside train_images/): z bands of labels 1..8 in a central box; 8 (a thoracic vertebra) is background.
const masked = good.slice(0, 2);
await Deno.mkdir(`${tmp}/data/segmentations`, { recursive: true });
for (const uid of masked) {
  const { geometry } = await loadStudy(`${tmp}/data/train_images/${uid}`);
  const [Z, H, W] = geometry.shape;
  const m = new Uint8Array(Z * H * W);
  for (let z = 0; z < Z; z++) {
    for (let y = H >> 2; y < (3 * H) >> 2; y++) {
      for (let x = W >> 2; x < (3 * W) >> 2; x++) m[(z * H + y) * W + x] = 1 + Math.floor((8 * z) / Z);
    }
  }
  await writeNifti(`${tmp}/data/segmentations/${uid}.nii`, volumeToNifti(m, geometry));
}

async function infer(...args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../infer/cli.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

Deno.test("infer: 8 valid rows per study, masks on the study grid, self-contained reports, a broken study reported", async () => {
  const r = await infer(
    "--data",
    `${tmp}/data`,
    "--weights",
    weights,
    "--out",
    `${tmp}/out`,
    "--truth",
    `${tmp}/data/train.csv`,
  );
  assert(r.code === 1, `exit 1 when a study fails, got ${r.code}: ${r.out}`);
  assert(r.out.includes("zz-broken") && r.out.includes("1 of 4 studies failed"), `failure summary: ${r.out}`);
  assert(r.out.includes("competition score"), "score printed with --truth");
  const sub = parseSubmission(await Deno.readTextFile(`${tmp}/out/submission.csv`), "submission.csv");
  assert(
    sub.size === 3 && good.every((u) => sub.get(u)?.length === 8),
    `8 rows for each good study: ${[...sub.keys()]}`,
  );
  for (const p of sub.values()) assert(p.every((v) => v >= 0.01 && v <= 0.99), `clipped probabilities ${p}`);
  const lines = (await Deno.readTextFile(`${tmp}/out/predictions.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert(lines.length === 4 && lines.filter((l) => !l.ok).length === 1, "predictions.jsonl: 3 ok + 1 error");
  assert(lines.find((l) => !l.ok).error.includes("zz-broken/1.dcm"), "the error names the file");
  // The run segments a study while the previous one's crops are cut: each study's classes must equal those of
  // predictStudy on that study alone.
  const ens = await loadEnsemble(weights, device);
  let islands = 0;
  try {
    for (const uid of good) {
      const st = await loadStudy(`${tmp}/data/train_images/${uid}`);
      const alone = await predictStudy(st, ens, INFER_DEFAULTS);
      const got = lines.find((l) => l.uid === uid).probabilities;
      assert(
        got.join() === alone.probabilities.join(),
        `${uid}: ${got} in the run, ${alone.probabilities} alone`,
      );
      // The default post-processing keeps each level's largest component of the argmax ("none").
      const raw = await segmentStudy(st, ens, { ...INFER_DEFAULTS, postprocess: "none" });
      const kept = keepLargestComponents(raw, alone.shape);
      assert(
        alone.labels.every((v, i) => v === kept[i]),
        `${uid}: labels are the argmax's largest components`,
      );
      islands += raw.filter((v, i) => v !== kept[i]).length;
      const meta = computeMeta(kept, alone.shape, { mean: st.header.mean, std: st.header.std });
      assert(JSON.stringify(alone.meta) === JSON.stringify(meta), `${uid}: meta of the kept labels`);
    }
  } finally {
    for (const m of [...ens.seg, ...ens.cls]) m.model.dispose();
  }
  assert(islands > 0, "the test's segmentor left no islands: the post-processing went untested");
  for (const uid of good) {
    const st = await loadStudy(`${tmp}/data/train_images/${uid}`);
    const nii = await readNifti(`${tmp}/out/${uid}/vertebrae.nii.gz`);
    const [Z, H, W] = st.geometry.shape;
    assert(
      [...nii.shape].sort().join() === [Z, H, W].sort().join(),
      `mask on the study grid: ${nii.shape} vs ${[Z, H, W]}`,
    );
    const html = await Deno.readTextFile(`${tmp}/out/${uid}/report.html`);
    assert(
      !/(src|href)\s*=\s*["']?(https?:)?\/\//i.test(html) && !/<script[^>]+src/i.test(html),
      "no remote resource",
    );
    assert((html.match(/data:image\/png;base64,/g) ?? []).length >= 2, "views embedded");
  }
  const index = await Deno.readTextFile(`${tmp}/out/index.html`);
  assert(index.includes("zz-broken") && good.every((u) => index.includes(u)), "index lists every study");
  const score = JSON.parse(await Deno.readTextFile(`${tmp}/out/score.json`));
  assert(score.studies === 3 && Number.isFinite(score.score), "score.json");
  await checkEvaluation(score, lines, index, r.out);
});

/** score.json, index.html and the printout of the first run against independent computations. */
async function checkEvaluation(score: any, lines: any[], index: string, out: string): Promise<void> {
  // No classifier run folder among the weights: the constant is the truth's own prevalence, said so.
  const truth = new Map((await readTrainCsv(`${tmp}/data/train.csv`)).map((r) => [r.uid, r.labels]));
  const held = good.map((u) => truth.get(u)!);
  const rates = [0, 1, 2, 3, 4, 5, 6, 7].map((j) =>
    Math.min(0.99, Math.max(0.01, held.reduce((a, y) => a + y[j], 0) / held.length))
  );
  assert(score.constant.source === ORACLE_SOURCE, `constant source ${score.constant.source}`);
  assert(score.constant.probabilities.every((p: number, j: number) => p === rates[j]), "held-out prevalence");
  const want = competitionScore(
    new Map(good.map((u) => [u, rates])),
    new Map(good.map((u) => [u, truth.get(u)!])),
  );
  assert(
    Math.abs(score.constant.score - want.score) < 1e-12,
    `constant ${score.constant.score} vs ${want.score}`,
  );
  assert(Math.abs(score.ratio - score.score / want.score) < 1e-12, "ratio");
  for (
    const s of [score.score.toFixed(4), score.constant.score.toFixed(4), ORACLE_SOURCE, "Segmentation dice"]
  ) {
    assert(index.includes(s), `index.html lacks ${s}`);
  }
  // The truth table: every good study's row shows each probability with its true label.
  for (const u of good) {
    const row = index.slice(index.indexOf(`>${u}</a>`), index.indexOf("</tr>", index.indexOf(`>${u}</a>`)));
    assert((row.match(/<span class="small">\([01]\)<\/span>/g) ?? []).length === 8, `truth cells of ${u}`);
  }
  assert(index.includes("no ground-truth mask"), "the study without a mask is said to have none");
  // Per-level dice: numpy on the two NIfTI files (nibabel), voxel for voxel.
  const py = await pyFixture("infer_fixtures.py", {
    level_dice: masked.map((u) => ({
      pred: `${tmp}/out/${u}/vertebrae.nii.gz`,
      truth: `${tmp}/data/segmentations/${u}.nii`,
    })),
  });
  assert(
    score.dice.studies === 2 && Object.keys(score.dice.perStudy).sort().join() === [...masked].sort().join(),
    "dice studies",
  );
  masked.forEach((u, i) => closeDice(score.dice.perStudy[u], py.level_dice[i], `dice of ${u}`));
  const mean = meanLevelDice(py.level_dice);
  closeDice(score.dice.perLevel, mean.perLevel, "mean dice per level");
  closeDice([score.dice.mean], [mean.mean], "mean dice");
  const noMask = lines.find((l) => l.uid === good[2]);
  assert(noMask.ok && noMask.dice === undefined && noMask.mask === undefined, "no dice without a mask");
  const last = out.split("\n").filter((l) => l.startsWith("infer: 3 studies: competition score")).at(-1)!;
  assert(
    last.includes(
      `competition score ${score.score.toFixed(4)} vs ${
        score.constant.score.toFixed(4)
      } for the best constant prediction (ratio`,
    ) &&
      last.includes("; segmentation dice C1..C7 ") && last.includes(`mean ${mean.mean!.toFixed(3)}`),
    `final line: ${last}`,
  );
}

function closeDice(got: (number | null)[], want: (number | null)[], what: string): void {
  assert(got.length === want.length, `${what}: ${got.length} values vs ${want.length}`);
  got.forEach((g, i) => {
    const w = want[i];
    if (g === null || w === null ? g !== w : Math.abs(g - w) > 1e-6) {
      throw new Error(`${what} C${i + 1}: ${g} vs ${w}`);
    }
  });
}

Deno.test("infer --resume skips written studies and retries failed ones; --train-labels sets the constant", async () => {
  const before = await Deno.readTextFile(`${tmp}/out/submission.csv`);
  const dice = JSON.parse(await Deno.readTextFile(`${tmp}/out/score.json`)).dice;
  // Training labels with known rates: overall 3/4, C1 1/4, C2 2/4, C3 1/4, C4..C7 0 (clipped to 0.01).
  await Deno.writeTextFile(
    `${tmp}/train-labels.csv`,
    "StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7\n" +
      ["t1,1,1,1,0,0,0,0,0", "t2,1,0,1,0,0,0,0,0", "t3,1,0,0,1,0,0,0,0", "t4,0,0,0,0,0,0,0,0"].join("\n") +
      "\n",
  );
  const r = await infer(
    ...["--data", `${tmp}/data`, "--weights", weights, "--out", `${tmp}/out`, "--resume"],
    ...["--truth", `${tmp}/data/train.csv`, "--train-labels", `${tmp}/train-labels.csv`],
  );
  assert(r.out.includes("3 studies already written, skipped"), r.out);
  assert(r.out.includes("infer 1/1 studies"), `only the failed study is tried again: ${r.out}`);
  assert((await Deno.readTextFile(`${tmp}/out/submission.csv`)) === before, "same submission");
  const score = JSON.parse(await Deno.readTextFile(`${tmp}/out/score.json`));
  // The best constant: each positive weighted by its share of its study's loss, w / W with row sums W 23,
  // 22, 22, 14 (overall 14 or 7, a vertebra 2 or 1); C4..C7 never positive sit at the clip 0.01.
  const best = [
    (14 / 23 + 14 / 22 + 14 / 22) / (14 / 23 + 14 / 22 + 14 / 22 + 7 / 14),
    (2 / 23) / (2 / 23 + 1 / 22 + 1 / 22 + 1 / 14),
    (2 / 23 + 2 / 22) / (2 / 23 + 2 / 22 + 1 / 22 + 1 / 14),
    (2 / 22) / (1 / 23 + 1 / 22 + 2 / 22 + 1 / 14),
    0.01,
    0.01,
    0.01,
    0.01,
  ];
  best.forEach((v, j) =>
    assert(
      Math.abs(score.constant.probabilities[j] - v) < 1e-12,
      `best constant ${score.constant.probabilities}`,
    )
  );
  assert(score.constant.source.includes(`${tmp}/train-labels.csv (4 studies`), score.constant.source);
  assert(JSON.stringify(score.dice) === JSON.stringify(dice), "the dice of resumed studies are kept");
  assert(r.out.includes(`infer: baseline: ${score.constant.source}`), r.out);
});

Deno.test("levelDice by hand on a tiny volume; truthMaskPath in the RSNA layout and with --masks; findTrainLabels", async () => {
  // C1: P 3, G 2, overlap 2 -> 0.8; C2: P 1, G 0 -> 0; C3: G 1 -> 0; label 9 is background; C4..C7: none.
  const pred = Uint8Array.from([1, 1, 1, 2, 0, 0, 0, 0]);
  const truth = Uint8Array.from([1, 1, 0, 0, 3, 9, 0, 0]);
  const d = levelDice(pred, truth);
  closeDice(d, [0.8, 0, 0, null, null, null, null], "levelDice");
  const m = meanLevelDice([d, [1, null, null, null, null, null, 0.5]]);
  closeDice(m.perLevel, [0.9, 0, 0, null, null, null, 0.5], "meanLevelDice");
  closeDice([m.mean], [(0.9 + 0.5) / 4], "mean over levels");
  const ref = (uid: string) => ({ uid, dir: `${tmp}/data/train_images/${uid}` });
  assert(
    (await truthMaskPath(ref(masked[0]))) === `${tmp}/data/segmentations/${masked[0]}.nii`,
    "RSNA layout",
  );
  assert((await truthMaskPath(ref(good[2]))) === null, "no mask");
  assert(
    (await truthMaskPath({ uid: masked[0], dir: `${tmp}/x/${masked[0]}` })) === null,
    "not the RSNA layout",
  );
  assert((await truthMaskPath(ref(masked[1]), `${tmp}/data/segmentations`)) !== null, "--masks");
  assert((await truthMaskPath(ref(masked[1]), `${tmp}/nowhere`)) === null, "--masks without the file");
  // The training labels a classifier run folder names, found from a `train all` folder or the run itself.
  await Deno.mkdir(`${tmp}/pipe/cls-x`, { recursive: true });
  await Deno.writeTextFile(
    `${tmp}/pipe/cls-x/config.json`,
    JSON.stringify({ stage: "cls", labels: `${tmp}/data/train.csv` }),
  );
  assert((await findTrainLabels(`${tmp}/pipe`)) === `${tmp}/data/train.csv`, "train all folder");
  assert(
    (await findTrainLabels(`${tmp}/seg.safetensors,${tmp}/pipe/cls-x`)) === `${tmp}/data/train.csv`,
    "run",
  );
  assert((await findTrainLabels(weights)) === null, "checkpoint files name no training labels");
});

/**
 * A study of the phantoms segmented by `seg` (random weights), with two vertebra boxes forced into its labels
 * so that real crops are classified, and its metadata.
 */
async function studyWithBoxes(seg: { model: nn.Module }[]) {
  const st = await loadStudy(`${tmp}/data/train_images/${good[0]}`);
  const h = st.header, [Z] = h.cubes.image_256!, z2 = Math.ceil(Z / 2), n = 256 * 256;
  const sub = new Float32Array(z2 * n);
  for (let k = 0; k < z2; k++) sub.set(st.image_256.subarray(2 * k * n, (2 * k + 1) * n), k * n);
  const pred = await predictVolume(seg.map((m) => m.model as never), { data: sub, shape: [z2, 256, 256] }, {
    mean: h.mean2,
    std: h.std2,
    size: 64,
  });
  // Random weights may find no vertebra; force two boxes so that real crops are classified.
  const labels = pred.labels.slice();
  for (let z = 0; z < Math.min(6, z2); z++) {
    for (let y = 100; y < 140; y++) {
      for (let x = 110; x < 150; x++) {
        labels[(z * 256 + y) * 256 + x] = z < 3 ? 1 : 2;
      }
    }
  }
  const meta = computeMeta(labels, [z2, 256, 256], { mean: h.mean, std: h.std });
  return { st, labels, meta };
}

Deno.test("the classifier ensemble and flip TTA equal the computation by hand", async () => {
  const { seg, cls } = await loadEnsemble(weights, device);
  try {
    const { st, labels, meta } = await studyWithBoxes(seg);
    // Crop stacks from a pool holding dirty stacks must give the same bits; the report's stack of one study
    // is not handed out again before its release().
    const stacks = new CropStacks();
    stacks.give(new Float32Array(3 * 8 * 3 * 8 * 32 * 32).fill(NaN));
    stacks.give(new Float32Array(3 * 8 * 3 * 8 * 32 * 32).fill(NaN));
    for (const tta of ["none", "flip"] as const) {
      const got = await classifyStudy(cls, st, labels, meta, tta);
      const pooled = await classifyStudy(cls, st, labels, meta, tta, undefined, stacks);
      const shown = pooled.crops.map((c) => c.crop?.slice());
      const again = await classifyStudy(cls, st, labels, meta, tta, undefined, stacks);
      assert(pooled.probabilities.join() === got.probabilities.join(), `${tta}: pooled stacks`);
      assert(again.probabilities.join() === got.probabilities.join(), `${tta}: reused stacks`);
      pooled.crops.forEach((c, i) => {
        assert(c.crop?.join() === shown[i]?.join(), `${tta}: report crop ${i} kept until release`);
        assert(c.crop?.join() === got.crops[i].crop?.join(), `${tta}: report crop ${i}`);
      });
      pooled.release();
      again.release();
      const expected = new Array(8).fill(0);
      for (const m of cls) {
        const item = await clsValItemFromMemory(st, labels, meta, { slices: 8, size: 32 });
        const k = item.shape[0], S = item.shape[4];
        const views = tta === "flip" ? [item.input, flipLastAxis(item.input, S)] : [item.input];
        for (const v of views) {
          const logits = await tidy(async () =>
            (await noGrad(() => F.sigmoid(m.model.forward(tensor(v, item.shape, { device }))))
              .toArray()) as Float32Array
          );
          // aggregateStudy applies the sigmoid itself: undo ours to feed it logits.
          const lg = logits.map((p) => Math.log(p / (1 - p)));
          aggregateStudy(lg, k).forEach((p, j) => (expected[j] += p / views.length / cls.length));
        }
      }
      got.probabilities.forEach((p, j) => {
        if (Math.abs(p - expected[j]) > 1e-5) throw new Error(`${tta} output ${j}: ${p} vs ${expected[j]}`);
      });
    }
    const x = Float32Array.from([1, 2, 3, 4, 5, 6]);
    assert(flipLastAxis(x, 3).join() === "3,2,1,6,5,4", "flip of the last axis");
    // The pool itself: zeros from a dirty kept stack (the same memory), at most `keep` kept, no stack twice.
    const pool = new CropStacks(1), big = new Float32Array(10).fill(7);
    pool.give(big);
    pool.give(big);
    pool.give(new Float32Array(10));
    const a = pool.take(6), b = pool.take(6);
    assert(a.buffer === big.buffer && a.join() === "0,0,0,0,0,0", "a kept stack, cleared");
    assert(b.buffer !== big.buffer && b.length === 6, "one kept: then a new one");
  } finally {
    for (const m of [...seg, ...cls]) m.model.dispose();
  }
});

Deno.test("a calibrated classifier: its probabilities through its calibration, raw with calibrate: false", async () => {
  const { tensors, meta: m0 } = await readCheckpointHost(`${tmp}/cls0.safetensors`);
  const calibration = {
    prior: [0.4, 0.1, 0.15, 0.1, 0.12, 0.14, 0.2, 0.18],
    center: [0.3, -2, -1.5, -1, -0.5, 0, 0.5, 1],
    slope: { overall: 0.5, vertebrae: 2 },
    studies: 25,
  };
  const save = async (name: string, cal: unknown) => {
    const meta = { config: JSON.stringify(m0.config), calibration: JSON.stringify(cal) };
    await Deno.writeFile(`${tmp}/${name}`, await encodeSafetensors(tensors, meta));
  };
  await save("cls0-cal.safetensors", calibration);
  const both = `${tmp}/seg.safetensors,${tmp}/cls0-cal.safetensors`;
  const cal = await loadEnsemble(both, device);
  const raw = await loadEnsemble(both, device, { calibrate: false });
  try {
    assert(JSON.stringify(cal.cls[0].calibration) === JSON.stringify(calibration), "loaded calibration");
    assert(raw.cls[0].calibration === undefined, "calibrate: false drops it");
    assert(calibrationLine(cal.cls[0]).includes("keeps 0.50 of its patient_overall logit and 2.00"), "line");
    assert(calibrationLine(raw.cls[0]).includes("raw probabilities"), "raw line");
    const { st, labels, meta } = await studyWithBoxes(cal.seg);
    const got = await classifyStudy(cal.cls, st, labels, meta, "none");
    const plain = await classifyStudy(raw.cls, st, labels, meta, "none");
    const want = applyCalibration(plain.probabilities, calibration);
    got.probabilities.forEach((p, j) => {
      if (Math.abs(p - want[j]) > 1e-12) throw new Error(`output ${j}: ${p} vs ${want[j]}`);
    });
    assert(got.probabilities.join() !== plain.probabilities.join(), "the calibration changes the outputs");
  } finally {
    for (const m of [...cal.seg, ...cal.cls, ...raw.seg, ...raw.cls]) m.model.dispose();
  }
  await save("cls0-bad.safetensors", { ...calibration, slope: { overall: -1, vertebrae: 1 } });
  let msg = "";
  await loadEnsemble(`${tmp}/seg.safetensors,${tmp}/cls0-bad.safetensors`, device).then(
    (e) => [...e.seg, ...e.cls].forEach((m) => m.model.dispose()),
    (e: Error) => (msg = e.message),
  );
  assert(msg.includes(`${tmp}/cls0-bad.safetensors: malformed calibration`), `error: ${msg}`);
});

Deno.test({
  name: "cleanup",
  fn: async () => {
    device.destroy();
    await Deno.remove(tmp, { recursive: true });
  },
});

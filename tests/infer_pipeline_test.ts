/**
 * `deno task infer` on phantom studies with tiny models (random weights saved as run checkpoints: the
 * pipeline's mechanics do not depend on what the models learned): the submission has 8 valid rows per
 * study, the masks sit on each study's own grid, reports reference nothing remote, a broken study is
 * reported while the others are written, --resume skips, and the classifier ensemble and flip TTA equal a
 * computation by hand from the same crops.
 */
import { F, models, nn, noGrad, openDevice, tensor, tidy } from "../mod.ts";
import { saveCheckpoint } from "../io/files.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { readNifti } from "../data/nifti.ts";
import { parseSubmission } from "../infer/score.ts";
import { classifyStudy, flipLastAxis } from "../infer/pipeline.ts";
import { loadEnsemble } from "../infer/ensemble.ts";
import { loadStudy } from "../infer/study.ts";
import { predictVolume } from "../infer/segment.ts";
import { computeMeta } from "../infer/meta.ts";
import { clsValItemFromMemory } from "../infer/crops/read.ts";
import { aggregateStudy } from "../infer/metric.ts";

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
});

Deno.test("infer --resume skips written studies and retries failed ones", async () => {
  const before = await Deno.readTextFile(`${tmp}/out/submission.csv`);
  const r = await infer("--data", `${tmp}/data`, "--weights", weights, "--out", `${tmp}/out`, "--resume");
  assert(r.out.includes("3 studies already written, skipped"), r.out);
  assert(r.out.includes("infer 1/1 studies"), `only the failed study is tried again: ${r.out}`);
  assert((await Deno.readTextFile(`${tmp}/out/submission.csv`)) === before, "same submission");
});

Deno.test("the classifier ensemble and flip TTA equal the computation by hand", async () => {
  const { seg, cls } = await loadEnsemble(weights, device);
  try {
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
    for (const tta of ["none", "flip"] as const) {
      const got = await classifyStudy(cls, st, labels, meta, tta);
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
  } finally {
    for (const m of [...seg, ...cls]) m.model.dispose();
  }
});

Deno.test({
  name: "cleanup",
  fn: async () => {
    device.destroy();
    await Deno.remove(tmp, { recursive: true });
  },
});

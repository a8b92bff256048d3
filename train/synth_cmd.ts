/**
 * `deno task synth --out DIR --studies N --seed S`: writes a synthetic dataset in the RSNA layout (see
 * data/synth.ts) with a progress line per study.
 */
import { writeSyntheticDataset } from "../data/synth.ts";

const args = Deno.args;
const opt = (k: string, d: string) => (args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1] : d);
const out = opt("out", "out/synth");
const studies = Number(opt("studies", "20")),
  seed = Number(opt("seed", "0")),
  size = Number(opt("size", "128"));
if (!Number.isInteger(studies) || studies < 1) {
  throw new Error(`--studies must be a positive integer, got ${opt("studies", "")}`);
}
const t0 = performance.now();
await writeSyntheticDataset({
  out,
  studies,
  seed,
  size,
  onStudy: (i, uid) => {
    const sec = (performance.now() - t0) / 1000;
    const eta = (sec / (i + 1)) * (studies - i - 1);
    console.log(`study ${i + 1}/${studies} ${uid}  ${sec.toFixed(1)} s, ETA ${eta.toFixed(0)} s`);
  },
});
console.log(
  `wrote ${studies} studies to ${out}/train_images, masks to ${out}/segmentations, labels to ${out}/train.csv`,
);

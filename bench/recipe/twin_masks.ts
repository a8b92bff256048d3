/**
 * @file Is the classifier reading the fracture from the mask channel? The phantoms' true masks carry each
 * break's gap as background (data/synth/render.ts cuts it out of the labelled bone), so a classifier fed the
 * TRUE masks (bench/recipe/true_masks.ts, cls.py) can see a break in its third input channel, which no
 * segmentor's mask shows at inference. This writes a copy of a synthetic dataset whose segmentations are the
 * true labels with the gaps filled by the intact twin's (`phantomStudy(seed, size, { fractures: false })`,
 * union: a voxel labelled in either), the images hard-linked, so that true_masks.ts on its cache gives crops
 * where the vertebrae are without the mask showing the fracture.
 *   deno run -A bench/recipe/twin_masks.ts --data out/dev31t/data --seed 31 --out out/dev31w/data [--picture gap.png]
 * It replays `writeSyntheticDataset`'s stream with `drawStudyPlan` (data/synth.ts) and checks every replayed
 * StudyInstanceUID against train.csv, so a dataset written with another seed fails loudly.
 */
import { readNifti, writeNifti } from "../../data/nifti.ts";
import { drawStudyPlan, phantomStudy, rng } from "../../data/synth.ts";
import { encodePng } from "../../infer/png.ts";
import { recipeFlags } from "./cache_flags.ts";

const f = recipeFlags("twin_masks.ts", {
  data: { type: "string", help: "a `deno task synth` dataset with --mask-fraction 1" },
  seed: { type: "number", help: "its --seed" },
  size: { type: "number", default: 128, help: "its --size" },
  out: { type: "string", help: "the copy to write" },
  picture: { type: "string", help: "also a PNG of the study with the most filled voxels: CT, mask, filled" },
}, ["data", "seed", "out"]);
const data = await Deno.realPath(f.data as string), out = f.out as string, size = f.size as number;
const uids = (await Deno.readTextFile(`${data}/train.csv`)).trim().split("\n").slice(1).map((l) =>
  l.split(",")[0]
);
await Deno.mkdir(`${out}/train_images`, { recursive: true });
await Deno.mkdir(`${out}/segmentations`, { recursive: true });
for (const name of ["train.csv", "train_bounding_boxes.csv"]) {
  await Deno.copyFile(`${data}/${name}`, `${out}/${name}`).catch((e) => {
    if (name === "train.csv") throw e; // older datasets have no boxes
  });
}
const r = rng(f.seed as number);
let filled = 0;
const counts: { n: number; seed: number; uid: string }[] = [];
for (const [s, expected] of uids.entries()) {
  const { studyUid, seed } = drawStudyPlan(r); // the mask draw's outcome is irrelevant: every study has one
  if (studyUid !== expected) throw new Error(`study ${s}: replayed ${studyUid}, train.csv has ${expected}`);
  const seg = await readNifti(`${data}/segmentations/${studyUid}.nii`);
  const twin = phantomStudy(seed, size, { fractures: false });
  const [Z, Y, X] = twin.shape;
  if (seg.data.length !== Z * Y * X) {
    throw new Error(`${studyUid}: twin [${twin.shape}] != mask ${seg.data.length}`);
  }
  // volumeToNifti's voxel order (data/nifti.ts): NIfTI (k, j, i) = series (Z-1-z, Y-1-r, c).
  let labelled = 0, same = 0, mine = 0;
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        const i = ((Z - 1 - z) * Y + (Y - 1 - y)) * X + x, t = twin.labels[(z * Y + y) * X + x];
        if (seg.data[i] !== 0) labelled++, same += seg.data[i] === t ? 1 : 0;
        if (seg.data[i] === 0 && t !== 0) seg.data[i] = t, mine++;
      }
    }
  }
  // A dataset written by another phantom version would give another anatomy: the twin must match the mask.
  if (same < 0.95 * labelled) {
    throw new Error(
      `${studyUid}: the twin matches ${same} of ${labelled} labelled voxels (another phantom version?)`,
    );
  }
  filled += mine;
  counts.push({ n: mine, seed, uid: studyUid });
  await writeNifti(`${out}/segmentations/${studyUid}.nii`, seg);
  // Hard links: the dataset readers list folders, and a symlinked folder is not one.
  const dir = `${out}/train_images/${studyUid}`;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir);
  for (const e of Deno.readDirSync(`${data}/train_images/${studyUid}`)) {
    await Deno.link(`${data}/train_images/${studyUid}/${e.name}`, `${dir}/${e.name}`);
  }
  if ((s + 1) % 25 === 0) console.log(`${s + 1}/${uids.length} studies, ${filled} voxels filled so far`);
}
console.log(`${uids.length} studies: twin-filled masks in ${out}/segmentations (${filled} voxels filled)`);
if (f.picture) {
  // The study with the most filled voxels among those whose fractures are all breaks (a compression's fill is
  // the intact body's lost height, not a gap).
  counts.sort((a, b) => b.n - a.n);
  const pick = counts.find((c) =>
    c.n > 0 && phantomStudy(c.seed, 32).fractures.every((x) => x.kind === "break")
  );
  if (!pick) throw new Error("no study with breaks only was filled");
  await Deno.writeFile(f.picture as string, await picture(pick.seed));
  console.log(
    `${f.picture}: ${pick.uid}, the axial slice with the most filled voxels (CT, mask, gap filled)`,
  );
}

/** Study `seed`'s axial slice with the most gap voxels: CT (bone window), its true mask, the mask filled
 * (gap voxels white), each 3x, side by side. */
async function picture(seed: number): Promise<Uint8Array> {
  const st = phantomStudy(seed, size), twin = phantomStudy(seed, size, { fractures: false });
  const [Z, Y, X] = st.shape, plane = Y * X, k = 3, gapOf = (i: number) => !st.labels[i] && twin.labels[i];
  let best = 0, bestN = -1;
  for (let z = 0; z < Z; z++) {
    let n = 0;
    for (let i = z * plane; i < (z + 1) * plane; i++) if (gapOf(i)) n++;
    if (n > bestN) best = z, bestN = n;
  }
  // Labels 1..7 in distinct colours, T1 / T2 grey.
  const PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]];
  PALETTE.push([145, 30, 180], [70, 240, 240], [128, 128, 128], [128, 128, 128]);
  const W = 3 * X * k + 2 * 4, img = new Uint8Array(W * Y * k * 3).fill(255);
  for (let y = 0; y < Y * k; y++) {
    for (let x = 0; x < X * k; x++) {
      const i = best * plane + Math.floor(y / k) * X + Math.floor(x / k);
      const ct = Math.max(0, Math.min(255, ((st.hu[i] + 200) / 1500) * 255));
      const panels = [
        [ct, ct, ct],
        PALETTE[st.labels[i]],
        gapOf(i) ? [255, 255, 255] : PALETTE[st.labels[i]],
      ];
      panels.forEach((c, p) => img.set(c, (y * W + p * (X * k + 4) + x) * 3));
    }
  }
  return await encodePng(img, W, Y * k, 3);
}

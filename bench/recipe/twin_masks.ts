/**
 * @file Is the classifier reading the fracture from the mask channel? The phantoms' true masks carry each
 * break's gap as background (data/synth/render.ts cuts it out of the labelled bone), so a classifier fed the
 * TRUE masks (bench/recipe/true_masks.ts, cls.py) can see a break in its third input channel, which no
 * segmentor's mask shows at inference. This writes a copy of a synthetic dataset whose segmentations are the
 * true labels with the gaps filled by the intact twin's (`phantomStudy(seed, size, { fractures: false })`,
 * union: a voxel labelled in either), the images hard-linked, so that true_masks.ts on its cache gives crops
 * where the vertebrae are without the mask showing the fracture.
 *   deno run -A bench/recipe/twin_masks.ts --data out/dev31t/data --seed 31 --out out/dev31w/data
 * It replays `writeSyntheticDataset`'s stream (data/synth.ts: 12 draws a study) and checks every replayed
 * StudyInstanceUID against train.csv, so a change of that stream fails loudly.
 */
import { parseFlags } from "../../cli/flags.ts";
import { readNifti, writeNifti } from "../../data/nifti.ts";
import { phantomStudy, rng } from "../../data/synth.ts";

const f = parseFlags(Deno.args, {
  data: { type: "string", help: "a `deno task synth` dataset with --mask-fraction 1" },
  seed: { type: "number", help: "its --seed" },
  size: { type: "number", default: 128, help: "its --size" },
  out: { type: "string", help: "the copy to write" },
});
if (f.data === undefined || f.seed === undefined || f.out === undefined) {
  console.error("bench/recipe/twin_masks.ts: --data, --seed and --out are required");
  Deno.exit(2);
}
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
const uid = () => {
  let s = "1.2.826.0.1.3680043.10.1378.";
  for (let k = 0; k < 3; k++) s += `${Math.floor(r() * 1e9)}.`;
  return s.slice(0, -1);
};
let filled = 0;
for (const [s, expected] of uids.entries()) {
  const studyUid = uid();
  uid();
  const seed = Math.floor(r() * 2 ** 31);
  for (let k = 0; k < 5; k++) r(); // jpeg, file order, stored offset, z0, mask draw
  if (studyUid !== expected) throw new Error(`study ${s}: replayed ${studyUid}, train.csv has ${expected}`);
  const seg = await readNifti(`${data}/segmentations/${studyUid}.nii`);
  const twin = phantomStudy(seed, size, { fractures: false });
  const [Z, Y, X] = twin.shape;
  if (seg.data.length !== Z * Y * X) {
    throw new Error(`${studyUid}: twin [${twin.shape}] != mask ${seg.data.length}`);
  }
  // volumeToNifti's voxel order (data/nifti.ts): NIfTI (k, j, i) = series (Z-1-z, Y-1-r, c).
  let labelled = 0, same = 0;
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        const i = ((Z - 1 - z) * Y + (Y - 1 - y)) * X + x, t = twin.labels[(z * Y + y) * X + x];
        if (seg.data[i] !== 0) labelled++, same += seg.data[i] === t ? 1 : 0;
        if (seg.data[i] === 0 && t !== 0) seg.data[i] = t, filled++;
      }
    }
  }
  // A dataset written by another phantom version would give another anatomy: the twin must match the mask.
  if (same < 0.95 * labelled) {
    throw new Error(
      `${studyUid}: the twin matches ${same} of ${labelled} labelled voxels (another phantom version?)`,
    );
  }
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

/**
 * Fracture boxes (RSNA's train_bounding_boxes.csv): the phantoms' boxes cover every voxel where a fractured
 * study differs from its intact twin, group nearby voxels into one box and keep distant ones apart; the
 * written CSV read back through the cache's slice file numbers lands each box on its slice, whichever way the
 * files are numbered; bad files and stale caches fail with the file and the problem.
 */
import { boxMap, readBoundingBoxes } from "../data/rsna.ts";
import { fractureBoxes, type PhantomStudy, phantomStudy, writeSyntheticDataset } from "../data/synth.ts";
import { preprocessDataset } from "../data/preprocess.ts";
import { readHeader } from "../data/cache.ts";
import { assertRejectsWith, assertThrows } from "./helpers.ts";

/** Voxels where a study and its twin differ by more than 100 HU, as flat indices. */
function changed(st: PhantomStudy, twin: PhantomStudy): number[] {
  const out: number[] = [];
  for (let i = 0; i < st.hu.length; i++) if (Math.abs(st.hu[i] - twin.hu[i]) > 100) out.push(i);
  return out;
}

Deno.test("fractureBoxes: one box per group of nearby changed pixels, every changed voxel inside one", () => {
  const blank = (): PhantomStudy => ({
    seed: 0,
    hu: new Int16Array(2 * 8 * 12),
    labels: new Uint8Array(2 * 8 * 12),
    shape: [2, 8, 12],
    spacing: [1, 1, 1],
    fractured: [0, 0, 0, 0, 0, 0, 0],
    fractures: [],
    centres: {},
  });
  const st = blank(), twin = blank();
  const set = (z: number, y: number, x: number) => st.hu[(z * 8 + y) * 12 + x] = 500;
  set(0, 1, 0), set(0, 2, 5); // 5 apart: grown by 2 they touch -> one box
  set(1, 1, 0), set(1, 1, 6), set(1, 4, 6); // 6 apart: two boxes; (1,6) and (4,6) grouped
  const got = fractureBoxes(st, twin).map((b) => [b.z, b.x, b.y, b.width, b.height].join(" "));
  const want = ["0 0 1 6 2", "1 0 1 1 1", "1 6 1 1 4"];
  if (got.join() !== want.join()) throw new Error(`boxes ${got} != ${want}`);
});

Deno.test("phantom boxes through train_bounding_boxes.csv and the cache land on the fractures", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const o = { studies: 6, seed: 15, size: 64, maskFraction: 0, positiveFraction: 0.7, thickness: [2.5] };
    const studies = new Map<string, PhantomStudy>();
    const rows = await writeSyntheticDataset({
      ...o,
      out: `${dir}/data`,
      onStudy: (_, uid, st) => void studies.set(uid, st),
    });
    await preprocessDataset(`${dir}/data`, `${dir}/cache`, { workers: 1 });
    const boxes = await readBoundingBoxes(`${dir}/data/train_bounding_boxes.csv`);
    let positives = 0;
    for (const row of rows) {
      const st = studies.get(row.uid)!;
      if (!row.patientOverall) {
        if (boxes.has(row.uid)) throw new Error(`${row.uid}: a study without fractures has boxes`);
        continue;
      }
      positives++;
      const h = await readHeader(`${dir}/cache`, row.uid);
      const map = boxMap(row.uid, boxes.get(row.uid) ?? [], h.cubes.image_full!, h.sliceNumbers);
      const twin = phantomStudy(st.seed, o.size, { ...o, fractures: false });
      const diff = changed(st, twin);
      if (!diff.length) throw new Error(`${row.uid}: fractured, yet no voxel differs from its twin`);
      const missed = diff.filter((i) => !map[i]).length;
      if (missed) throw new Error(`${row.uid}: ${missed} of ${diff.length} changed voxels outside every box`);
      // boxes bound the fractures: at most a few times their voxels
      const inside = map.reduce((a, v) => a + v, 0);
      if (inside > 6 * diff.length) {
        throw new Error(`${row.uid}: boxes hold ${inside} voxels for ${diff.length}`);
      }
    }
    if (positives < 2) throw new Error(`only ${positives} fractured studies drawn`);
    const names = new Set<boolean>();
    for (const uid of studies.keys()) {
      const h = await readHeader(`${dir}/cache`, uid);
      names.add(h.sliceNumbers![0] === 1);
    }
    if (names.size < 2) throw new Error("expected studies numbered from either end");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readBoundingBoxes and boxMap: bad rows and stale caches name the problem", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = `${dir}/b.csv`;
    const cases: [string, string][] = [
      ["StudyInstanceUID,x,y,width,height\n1.2,1,1,2,2\n", "missing column(s) slice_number"],
      ["StudyInstanceUID,x,y,width,height,slice_number\n1.2,1,-1,2,2,3\n", 'line 2: y is "-1"'],
      [
        "StudyInstanceUID,x,y,width,height,slice_number\n1.2,1,1,2,2,3.5\n",
        "line 2: slice_number 3.5 is not an integer",
      ],
    ];
    for (const [text, msg] of cases) {
      await Deno.writeTextFile(p, text);
      await assertRejectsWith(readBoundingBoxes(p), `${p}: ${msg}`);
    }
    await Deno.writeTextFile(
      p,
      "StudyInstanceUID,x,y,width,height,slice_number\n1.2,1.5,0,2,1,7\n1.2,0,2,1,1,9\n",
    );
    const b = (await readBoundingBoxes(p)).get("1.2")!;
    const map = boxMap("1.2", b, [2, 3, 4], [9, 7]);
    // slice_number 7 is z 1: x 1.5..3.5 covers columns 1-3 of row 0; slice_number 9 is z 0: row 2, column 0
    const got = [...map].join("");
    if (got !== "000000001000" + "011100000000") throw new Error(`map ${got}`);
    assertThrows(() => boxMap("1.2", b, [2, 3, 4], undefined), "1.2: the cache does not record");
    assertThrows(() => boxMap("1.2", b, [2, 3, 4], [9, 8]), "slice_number 7, which no file has");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

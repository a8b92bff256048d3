/**
 * The in-memory study layer (infer/study.ts, infer/cube_source.ts, infer/nifti_out.ts, the source-based
 * readers of infer/crops/read.ts): `loadStudy` gives exactly the cache's arrays and header for the same
 * phantom study; boxes, validation items and training samples are identical from memory and from the
 * cache; `labelsToNifti` output read by nibabel has the affine that pydicom's geometry gives (also for a
 * tilted, rotated series with non-square pixels) and the labels of the seed's mapping (z // 2, cv2
 * INTER_NEAREST), voxel for voxel also through world coordinates; bad folders give errors naming them.
 */
import { writeSyntheticDataset } from "../data/synth.ts";
import { preprocessStudy } from "../data/preprocess.ts";
import { type Box, readCube } from "../data/cache.ts";
import { listStudies } from "../data/rsna.ts";
import { niftiToVolume, readNifti } from "../data/nifti.ts";
import { loadStudy } from "../infer/study.ts";
import { type CubeSource, memorySource, openCacheSource, type SourceCube } from "../infer/cube_source.ts";
import { labelsToNifti, upsampleLabels, writeLabelsNifti } from "../infer/nifti_out.ts";
import { computeMeta, writeSegPrediction } from "../infer/meta.ts";
import { drawClsTrainSpec } from "../infer/crops.ts";
import {
  clsValItemFromMemory,
  readClsStudy,
  readClsTrainSample,
  readClsTrainSampleFrom,
  readClsValItem,
} from "../infer/crops/read.ts";
import { mulberry32 } from "../core/random.ts";
import { assertRejectsWith } from "./helpers.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";
const FIX = new URL("./infer_study_fixtures.py", import.meta.url).pathname;
const DICOM_FIX = new URL("./dicom_fixtures.py", import.meta.url).pathname;

async function py(script: string, ...args: string[]): Promise<string> {
  const o = await new Deno.Command(PY, { args: [script, ...args], stdout: "piped", stderr: "piped" })
    .output();
  if (!o.success) throw new Error(`${script} ${args.join(" ")}:\n${new TextDecoder().decode(o.stderr)}`);
  return new TextDecoder().decode(o.stdout);
}

function eqArrays(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) {
      throw new Error(`${what}: element ${i}: ${a[i]} != ${b[i]}`);
    }
  }
}

function eq(a: unknown, b: unknown, what: string): void {
  const sa = JSON.stringify(a), sb = JSON.stringify(b);
  if (sa !== sb) throw new Error(`${what}:\n got      ${sa}\n expected ${sb}`);
}

function assertThrows(f: () => unknown, ...parts: string[]): void {
  try {
    f();
  } catch (e) {
    const m = (e as Error).message;
    for (const p of parts) if (!m.includes(p)) throw new Error(`"${m}" lacks "${p}"`);
    return;
  }
  throw new Error(`no error (${parts.join(", ")})`);
}

/** Labels whose value encodes the position, so that any wrong index shows. */
function positional(shape: [number, number, number]): Uint8Array {
  const [Z, Y, X] = shape, out = new Uint8Array(Z * Y * X);
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) out[(z * Y + y) * X + x] = (z * 37 + y * 11 + x * 3 + ((x * y) >> 2)) % 256;
    }
  }
  return out;
}

interface Check {
  shape: number[];
  dtype: string;
  sform_code: number;
  affine_err: number;
  data_mismatch: number;
  world_offgrid: number;
  world_outside: number;
  world_mismatch: number;
}

/** Writes the labels as NIfTI and checks it with nibabel + pydicom + cv2 (infer_study_fixtures.py check). */
async function checkNifti(
  dir: string,
  seriesDir: string,
  pred: Uint8Array,
  full: [number, number, number],
  geometry: Parameters<typeof labelsToNifti>[1],
  predShape: [number, number, number],
  name: string,
): Promise<void> {
  const path = `${dir}/${name}.nii.gz`;
  const vol = await writeLabelsNifti(path, pred, geometry, full, predShape);
  await Deno.writeFile(`${dir}/${name}.pred`, pred);
  const c: Check = JSON.parse(
    await py(FIX, "check", path, seriesDir, `${dir}/${name}.pred`, ...predShape.map(String)),
  );
  const [Z, H, W] = full;
  eq([c.shape, c.dtype, c.sform_code], [[W, H, Z], "uint8", 1], `${name}: nibabel shape, dtype, sform code`);
  // The sform is stored as float32: positions of tens of mm agree to ~1e-5.
  if (!(c.affine_err < 1e-4)) throw new Error(`${name}: affine differs from pydicom's by ${c.affine_err}`);
  if (c.data_mismatch !== 0) {
    throw new Error(`${name}: ${c.data_mismatch} voxels differ from the seed mapping`);
  }
  if (!(c.world_offgrid < 1e-3) || c.world_outside !== 0 || c.world_mismatch !== 0) {
    throw new Error(`${name}: world-coordinate check ${JSON.stringify(c)}`);
  }
  // Reading it back through the RSNA rule gives the upsampled labels.
  const back = niftiToVolume(await readNifti(path), full, path);
  eqArrays(back, upsampleLabels(pred, full, predShape), `${name}: niftiToVolume(readNifti) = upsampled`);
  eqArrays(
    vol.affine.flat(),
    labelsToNifti(pred, geometry, full, predShape).affine.flat(),
    `${name}: affine`,
  );
}

async function sameBoxes(a: CubeSource, b: CubeSource, cube: SourceCube, boxes: Box[]): Promise<void> {
  for (const box of boxes) {
    const x = await a.readBox(cube, box), y = await b.readBox(cube, box);
    const what = `${cube} ${JSON.stringify(box)}`;
    eq(x.shape, y.shape, `${what}: shape`);
    eq(x.data.constructor.name, y.data.constructor.name, `${what}: element type`);
    eqArrays(x.data, y.data, what);
  }
}

Deno.test("infer study: memory = cache; CubeSource readers; labelsToNifti vs pydicom + nibabel + cv2", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "infer_study_test_" });
  try {
    await writeSyntheticDataset({ out: `${dir}/data`, studies: 2, seed: 21, size: 64, maskFraction: 1 });
    const studies = await listStudies(`${dir}/data`);
    const cache = `${dir}/cache`;

    await t.step("loadStudy equals preprocessStudy's cache; memory and cache sources agree", async () => {
      for (const st of studies) {
        const header = await preprocessStudy(st, cache);
        const mem = await loadStudy(st.dir);
        // The cache also holds the study's ground-truth mask; inference has none.
        const { mask_256, ...cubes } = header.cubes;
        if (!mask_256) throw new Error("phantom study without mask");
        eq(mem.header, { ...header, cubes }, `${st.uid}: header`);
        eq(mem.uid, st.uid, "uid = folder name");
        const full = header.cubes.image_full!;
        eq(mem.geometry.shape, full, "geometry shape");
        eq(mem.geometry.spacing, header.spacing, "spacing");
        for (const cube of ["image_full", "image_256"] as const) {
          const c = await readCube(cache, st.uid, cube);
          eq(mem[cube].constructor.name, c.data.constructor.name, `${cube} element type`);
          eqArrays(mem[cube], c.data, `${st.uid}: ${cube}`);
        }

        // The seg stage's prediction, as the pipeline makes it: labels on the [::2] grid of the 256 cube.
        const labels = (await readCube(cache, st.uid, "mask_256", { zStep: 2 })).data as Uint8Array;
        const grid: [number, number, number] = [Math.ceil(full[0] / 2), 256, 256];
        const meta = computeMeta(labels, grid, { mean: header.mean, std: header.std });
        if (Object.keys(meta.boxes).length < 7) throw new Error("phantom prediction lacks vertebrae");
        await writeSegPrediction(cache, st.uid, labels, grid, meta, ["test"]);

        const fromCache = await openCacheSource(cache, st.uid);
        const fromMem = memorySource(mem, { labels });
        eq([fromMem.uid, fromMem.full, fromMem.grid, fromMem.header], [
          fromCache.uid,
          fromCache.full,
          fromCache.grid,
          { ...fromCache.header, cubes },
        ], "source info");
        const boxes: Box[] = [
          {},
          { z: [3, 20], y: [5, 40], x: [10, 70], zStep: 2 },
          {
            z: [-4, 9],
            y: [200, 300],
            x: [-3, 30],
          },
          { z: [full[0] - 5, full[0] + 6], zStep: 2 },
          { z: [7, 7] },
        ];
        await sameBoxes(fromMem, fromCache, "image_full", boxes);
        await sameBoxes(fromMem, fromCache, "image_256", boxes);
        await sameBoxes(fromMem, fromCache, "pred", boxes);

        const csv = [1, 0, 1, 0, 0, 0, 0, 1];
        const o = { slices: 8, size: 32 };
        const study = await readClsStudy(cache, st.uid, csv);
        const want = await readClsValItem(cache, study, o);
        const got = await clsValItemFromMemory(mem, labels, meta, { ...o, labels: csv });
        eq([got.shape, got.vertebrae], [want.shape, want.vertebrae], "val item shape, vertebrae");
        eqArrays(got.labels, want.labels, "val item labels");
        eqArrays(got.input, want.input, `${st.uid}: val item input, memory vs cache`);
        if (!want.input.some((v) => v !== 0)) throw new Error("val item is all zeros");
        // Inference: no CSV labels.
        eqArrays(
          (await clsValItemFromMemory(mem, labels, meta, o)).labels,
          new Array(8).fill(0),
          "no labels",
        );

        for (const seed of [1, 2, 3]) {
          const spec = drawClsTrainSpec(study, mulberry32(seed), { ...o, minArea: 50 });
          const a = await readClsTrainSample(cache, spec), b = await readClsTrainSampleFrom(fromMem, spec);
          eqArrays(b.input, a.input, `train sample ${seed}: memory vs cache`);
          eqArrays(b.labels, a.labels, `train sample ${seed}: labels`);
        }

        assertThrows(
          () => memorySource(mem, { labels: labels.subarray(1) }),
          "memory:",
          st.dir,
          "Uint8Array",
        );
        await assertRejectsWith(memorySource(mem).readBox("pred"), "no predicted labels");
        await assertRejectsWith(clsValItemFromMemory(mem, labels, meta, { labels: [2] }), "labels");
      }
    });

    await t.step(
      "labelsToNifti: affine of the series, the seed's mapping, voxel for voxel in the world",
      async () => {
        const st = studies[0];
        const mem = await loadStudy(st.dir);
        const full = mem.geometry.shape, Z2 = Math.ceil(full[0] / 2);
        // 256 -> 64 (the pipeline's grid on this small phantom), 16 -> 64 (upsampling), 24 x 40 (odd ratios).
        for (const g of [[256, 256], [16, 16], [24, 40]]) {
          const shape: [number, number, number] = [Z2, g[0], g[1]];
          await checkNifti(dir, st.dir, positional(shape), full, mem.geometry, shape, `synth_${g.join("x")}`);
        }
        // No temporary files left beside the outputs (the writes are atomic renames).
        const names = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes(".tmp"));
        eq(names, [], "temporary files left");

        // A tilted, rotated series with non-square pixels and slices, and an odd slice count.
        await py(FIX, "oblique", `${dir}/oblique`, "--slices", "9", "--rows", "20", "--cols", "24");
        const ob = await loadStudy(`${dir}/oblique`);
        eq(ob.geometry.shape, [9, 20, 24], "oblique shape");
        const shape: [number, number, number] = [5, 8, 12];
        await checkNifti(
          dir,
          `${dir}/oblique`,
          positional(shape),
          [9, 20, 24],
          ob.geometry,
          shape,
          "oblique",
        );
        // The default grid is the seed's [ceil(Z / 2), 256, 256]; plain .nii works too.
        const pred = positional([5, 256, 256]);
        // The study itself carries the geometry and the full shape.
        await writeLabelsNifti(`${dir}/plain.nii`, pred, ob);
        eqArrays(
          niftiToVolume(await readNifti(`${dir}/plain.nii`), [9, 20, 24]),
          upsampleLabels(pred, [9, 20, 24]),
          ".nii round trip",
        );

        eqArrays(
          labelsToNifti(pred, ob).data,
          labelsToNifti(pred, ob.geometry, [9, 20, 24]).data,
          "study form",
        );
        assertThrows(() => labelsToNifti(pred, ob.geometry, [10, 20, 24]), "fullShape", "series");
        assertThrows(() => upsampleLabels(pred, [11, 20, 24]), "Uint8Array", "[6,256,256]");
        assertThrows(() => upsampleLabels(positional([4, 8, 8]), [9, 20, 24], [4, 8, 8]), "4 predicted", "9");
        await assertRejectsWith(
          writeLabelsNifti(`${dir}/x.tif`, pred, ob.geometry, [9, 20, 24]),
          "x.tif",
          ".nii",
        );
      },
    );

    await t.step("loadStudy: folders with no DICOM, another modality, too few slices", async () => {
      await Deno.mkdir(`${dir}/empty`);
      await Deno.writeTextFile(`${dir}/empty/readme.txt`, "no images");
      await assertRejectsWith(loadStudy(`${dir}/empty`), `${dir}/empty`, "no .dcm");
      await assertRejectsWith(loadStudy(`${dir}/missing`), `${dir}/missing`, "cannot list");
      await py(DICOM_FIX, `${dir}/mr`, "--slices", "10", "--modality", "MR", "--truth", `${dir}/mr.bin`);
      await assertRejectsWith(loadStudy(`${dir}/mr`), `${dir}/mr`, 'modality "MR"', "CT");
      await py(DICOM_FIX, `${dir}/short`, "--slices", "5", "--truth", `${dir}/short.bin`);
      await assertRejectsWith(
        loadStudy(`${dir}/short`),
        `${dir}/short`,
        "only 5 slices",
        "at least 8",
        "minSlices",
      );
      const ok = await loadStudy(`${dir}/short`, { minSlices: 5, uid: "given" });
      eq([ok.uid, ok.geometry.shape[0]], ["given", 5], "minSlices option, uid option");
      const truth = new Int16Array(Deno.readFileSync(`${dir}/short.bin`).buffer);
      eqArrays(ok.image_full, truth, "image_full = pydicom's stored values, cranial first");
      await assertRejectsWith(loadStudy(`${dir}/short`, { minSlices: 0 }), "minSlices", `${dir}/short`);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

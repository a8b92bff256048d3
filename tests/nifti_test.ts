/**
 * NIfTI masks: a mask written by nibabel in the RSNA layout reads aligned with its DICOM series (labels
 * follow the slice positions, a corner marker lands at DICOM rows 0-3 / columns 0-5); our writer's output
 * (.nii and .nii.gz) reads back in nibabel with the same data and affine; a mask of the wrong shape is
 * rejected with the file named.
 */
import { readDicomSeries } from "../data/dicom.ts";
import { niftiToVolume, readNifti, volumeToNifti, writeNifti } from "../data/nifti.ts";
import { assertClose } from "./helpers.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";
const here = (f: string) => new URL(f, import.meta.url).pathname;

async function sh(args: string[]): Promise<string> {
  const o = await new Deno.Command(PY, { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(new TextDecoder().decode(o.stderr));
  return new TextDecoder().decode(o.stdout).trim();
}

Deno.test("RSNA-layout NIfTI masks align with their DICOM series; our writer round-trips through nibabel", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // Cranial-first file numbering, to make sure alignment follows positions, not names.
    await sh([
      here("./dicom_fixtures.py"),
      `${dir}/s`,
      "--order",
      "cranial-first",
      "--slices",
      "6",
      "--truth",
      `${dir}/t.bin`,
    ]);
    await sh([here("./nifti_fixtures.py"), "make", `${dir}/s`, `${dir}/mask.nii`]);
    const series = await readDicomSeries(`${dir}/s`);
    const nii = await readNifti(`${dir}/mask.nii`);
    const m = niftiToVolume(nii, series.shape, `${dir}/mask.nii`);
    const [Z, Y, X] = series.shape;
    for (let z = 0; z < Z; z++) {
      for (let r = 0; r < Y; r++) {
        for (let c = 0; c < X; c++) {
          const i = (z * Y + r) * X + c;
          const want = r < 4 && c < 6 ? 9 : series.pixels[i] > 1700 ? z + 1 : 0;
          if (m[i] !== want) throw new Error(`voxel [${z},${r},${c}]: mask ${m[i]}, expected ${want}`);
        }
      }
    }
    const ref = JSON.parse(await sh([here("./nifti_fixtures.py"), "dump", `${dir}/mask.nii`]));
    const back = volumeToNifti(m, series);
    assertClose(back.affine.flat(), ref.affine.flat(), "affine from the DICOM geometry", 0, 1e-5);
    for (const name of ["ours.nii", "ours.nii.gz"]) {
      await writeNifti(`${dir}/${name}`, back);
      const got = JSON.parse(await sh([here("./nifti_fixtures.py"), "dump", `${dir}/${name}`]));
      if (got.shape.join() !== ref.shape.join()) throw new Error(`${name}: shape ${got.shape}`);
      assertClose(got.data, ref.data, `${name}: data as nibabel reads it`, 0, 0);
      assertClose(got.affine.flat(), ref.affine.flat(), `${name}: affine`, 0, 1e-5);
      const again = await readNifti(`${dir}/${name}`);
      assertClose(niftiToVolume(again, series.shape), m, `${name}: our reader`, 0, 0);
    }
    let msg = "";
    try {
      niftiToVolume(nii, [Z + 1, Y, X], `${dir}/mask.nii`);
    } catch (e) {
      msg = (e as Error).message;
    }
    if (!msg.includes(`${dir}/mask.nii`) || !msg.includes("do not match")) {
      throw new Error(`wrong-shape error: "${msg}"`);
    }
    await Deno.writeTextFile(`${dir}/bad.nii`, "not a nifti file at all, just text");
    const bad = await readNifti(`${dir}/bad.nii`).then(() => "", (e) => (e as Error).message);
    if (!bad.includes(`${dir}/bad.nii`)) throw new Error(`bad file error: "${bad}"`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

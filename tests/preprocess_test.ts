/**
 * Preprocessing and the cache against an independent reference (pydicom + OpenCV + nibabel, as the seed
 * does it): the 256-res cube equals cv2.resize INTER_LINEAR of the position-sorted stored slices, cranial
 * first; the mask cube equals nibabel's array through the RSNA rule resized INTER_NEAREST; crops read only
 * what they ask for and equal slices of the whole; reruns resume and skip finished studies.
 */
import { writeSyntheticDataset } from "../data/synth.ts";
import { preprocessDataset } from "../data/preprocess.ts";
import { readCube, readHeader } from "../data/cache.ts";
import { listStudies } from "../data/rsna.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";

const REF = `
import sys, os, numpy as np, pydicom, cv2, nibabel as nib
d, mask, out = sys.argv[1], sys.argv[2], sys.argv[3]
dss = [pydicom.dcmread(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".dcm")]
dss.sort(key=lambda x: -float(x.ImagePositionPatient[2]))  # most cranial first
img = np.stack([cv2.resize(x.pixel_array, (256, 256), interpolation=cv2.INTER_LINEAR) for x in dss])
img.astype("<i2").tofile(out + ".img")
if mask != "-":
    m = np.asarray(nib.load(mask).dataobj).astype(np.uint8)  # [col, Rows-1-row, z inferior first]
    cube = m[:, ::-1, ::-1].transpose(2, 1, 0)  # [z cranial first, row, col]
    np.stack([cv2.resize(s, (256, 256), interpolation=cv2.INTER_NEAREST) for s in cube]).tofile(out + ".mask")
`;

Deno.test("preprocessing matches pydicom + OpenCV + nibabel; cache crops; resumable", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeSyntheticDataset({ out: `${dir}/data`, studies: 3, seed: 9, size: 96, maskFraction: 1 });
    // A leftover of a crashed run must not count as cached.
    await Deno.mkdir(`${dir}/cache/1.2.3.partial`, { recursive: true });
    const first = await preprocessDataset(`${dir}/data`, `${dir}/cache`, { workers: 2 });
    if (first.processed.length !== 3) throw new Error(`processed ${first.processed.length}`);
    for (const st of await listStudies(`${dir}/data`)) {
      const o = await new Deno.Command(PY, {
        args: ["-c", REF, st.dir, st.mask ?? "-", `${dir}/ref`],
        stderr: "piped",
      }).output();
      if (!o.success) throw new Error(new TextDecoder().decode(o.stderr));
      const h = await readHeader(`${dir}/cache`, st.uid);
      const ref = new Int16Array(Deno.readFileSync(`${dir}/ref.img`).buffer);
      const img = await readCube(`${dir}/cache`, st.uid, "image_256");
      if (img.data.length !== ref.length) {
        throw new Error(`${st.uid}: ${img.data.length} voxels vs ${ref.length}`);
      }
      for (let i = 0; i < ref.length; i++) {
        if (img.data[i] !== ref[i]) {
          throw new Error(`${st.uid}: image voxel ${i}: ${img.data[i]} vs cv2 ${ref[i]}`);
        }
      }
      const refMask = Deno.readFileSync(`${dir}/ref.mask`);
      const mask = await readCube(`${dir}/cache`, st.uid, "mask_256");
      for (let i = 0; i < refMask.length; i++) {
        if (mask.data[i] !== refMask[i]) throw new Error(`${st.uid}: mask voxel ${i}`);
      }
      let s = 0;
      for (const v of img.data) s += v;
      if (Math.abs(s / img.data.length - h.mean) > 1e-6 * Math.abs(h.mean) + 1e-6) throw new Error("mean");
      // A 40-slice... here 10-slice crop with [::2] in a box equals the same slice of the whole cube.
      const [Z] = h.cubes.image_256!;
      const crop = await readCube(`${dir}/cache`, st.uid, "image_256", {
        z: [3, 23],
        zStep: 2,
        y: [50, 90],
        x: [100, 170],
      });
      if (crop.shape.join() !== `${Math.ceil(Math.min(20, Z - 3) / 2)},40,70`) {
        throw new Error(`crop shape ${crop.shape}`);
      }
      for (let k = 0; k < crop.shape[0]; k++) {
        for (let y = 0; y < 40; y++) {
          for (let x = 0; x < 70; x++) {
            const want = img.data[((3 + 2 * k) * 256 + 50 + y) * 256 + 100 + x];
            if (crop.data[(k * 40 + y) * 70 + x] !== want) throw new Error(`crop voxel ${k},${y},${x}`);
          }
        }
      }
    }
    const again = await preprocessDataset(`${dir}/data`, `${dir}/cache`, { workers: 2 }).catch((e) =>
      e as Error
    );
    if (again instanceof Error || again.skipped.length !== 3 || again.processed.length !== 0) {
      throw new Error("rerun should skip all studies");
    }
    const bad = await readCube(`${dir}/cache`, "nope", "image_256").then(
      () => "",
      (e) => (e as Error).message,
    );
    if (!bad.includes("nope")) throw new Error(`missing-study error: ${bad}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

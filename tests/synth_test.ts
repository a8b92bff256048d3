/**
 * The synthetic RSNA-layout dataset: every study reads back as a valid series (plain and JPEG Lossless,
 * either slice numbering), masks align with bone, fractured vertebrae contain a low-density crack, labels in
 * train.csv are consistent, and the same seed gives the same dataset. Our DICOM writer's JPEG Lossless files
 * decode bit-exactly in dcmtk.
 */
import { readDicomSeries, toHounsfield } from "../data/dicom.ts";
import { niftiToVolume, readNifti } from "../data/nifti.ts";
import {
  listStudies,
  makeFolds,
  parseRowId,
  readFoldsCsv,
  readTrainCsv,
  rowIds,
  writeFoldsCsv,
} from "../data/rsna.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { writeCtSlice } from "../data/dicom_write.ts";

Deno.test("synthetic dataset: valid series, aligned masks, consistent labels, same seed same data", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const o = { studies: 4, seed: 3, size: 64, maskFraction: 1, positiveFraction: 0.5, thickness: [2, 2.5] };
    await writeSyntheticDataset({ ...o, out: `${dir}/a` });
    await writeSyntheticDataset({ ...o, out: `${dir}/b` });
    const csvA = await Deno.readTextFile(`${dir}/a/train.csv`),
      csvB = await Deno.readTextFile(`${dir}/b/train.csv`);
    if (csvA !== csvB) throw new Error("same seed gave different labels");
    const rows = await readTrainCsv(`${dir}/a/train.csv`);
    const studies = await listStudies(`${dir}/a`);
    if (studies.length !== 4 || rows.length !== 4) {
      throw new Error(`${studies.length} studies, ${rows.length} rows`);
    }
    const syntaxes = new Set<string>();
    for (const st of studies) {
      const labels = st.labels!;
      if (labels[0] !== (labels.slice(1).some((v) => v) ? 1 : 0)) {
        throw new Error(`${st.uid}: patient_overall inconsistent`);
      }
      const s = await readDicomSeries(st.dir);
      syntaxes.add(s.transferSyntax);
      const hu = toHounsfield(s);
      const m = niftiToVolume(await readNifti(st.mask!), s.shape, st.mask!);
      const count = new Array(10).fill(0);
      let mean = 0;
      for (let i = 0; i < m.length; i++) {
        if (!m[i]) continue;
        count[m[i]]++;
        mean += hu[i];
      }
      mean /= count.reduce((a, b) => a + b, 0);
      // The mask lies on bone (cancellous 170-370 HU, cortex 900-1400, blurred) read back through DICOM.
      if (mean < 250) throw new Error(`${st.uid}: labelled voxels average ${mean.toFixed(0)} HU`);
      for (let v = 2; v <= 7; v++) if (!count[v]) throw new Error(`${st.uid}: C${v} has no voxels`);
    }
    if (syntaxes.size < 2) throw new Error(`expected plain and JPEG Lossless studies, got ${[...syntaxes]}`);
    const folds = makeFolds(rows, 2, 1);
    if (new Set(folds.values()).size !== 2) throw new Error("folds");
    await writeFoldsCsv(`${dir}/folds.csv`, folds);
    const back = await readFoldsCsv(`${dir}/folds.csv`);
    if ([...back].join() !== [...folds].join()) throw new Error("folds round trip");
    const ids = rowIds(rows[0].uid);
    if (
      ids.length !== 8 || parseRowId(ids[7]).target !== "patient_overall" ||
      parseRowId(ids[0]).uid !== rows[0].uid
    ) {
      throw new Error(`row ids ${ids}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("our JPEG Lossless DICOM decodes bit-exactly in dcmtk and pydicom", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rows = 33, cols = 47;
    const px = new Int16Array(rows * cols);
    for (let i = 0; i < px.length; i++) {
      px[i] = Math.round(Math.sin(i * 0.37) * 3000 + Math.cos(i * 0.011) * 900);
    }
    px[0] = -32768;
    px[1] = 32767;
    px[2] = -3024;
    await Deno.writeFile(
      `${dir}/j.dcm`,
      writeCtSlice({
        studyUid: "1.2.3",
        seriesUid: "1.2.3.4",
        sopUid: "1.2.3.4.5",
        patientId: "p",
        instanceNumber: 1,
        position: [0, 0, 0],
        orientation: [1, 0, 0, 0, 1, 0],
        pixelSpacing: [0.5, 0.5],
        sliceThickness: 1,
        rows,
        cols,
        pixels: px,
        rescaleIntercept: -1024,
        rescaleSlope: 1,
        jpegLossless: true,
      }),
    );
    const o = await new Deno.Command("dcmdjpeg", {
      args: [`${dir}/j.dcm`, `${dir}/raw.dcm`],
      stderr: "piped",
    }).output();
    if (!o.success) throw new Error(`dcmdjpeg: ${new TextDecoder().decode(o.stderr)}`);
    const py = await new Deno.Command(Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3", {
      args: [
        "-c",
        `import pydicom, sys; sys.stdout.buffer.write(pydicom.dcmread("${dir}/raw.dcm").pixel_array.astype("<i2").tobytes())`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!py.success) throw new Error(new TextDecoder().decode(py.stderr));
    const got = new Int16Array(py.stdout.buffer, py.stdout.byteOffset, py.stdout.length / 2);
    for (let i = 0; i < px.length; i++) {
      if (got[i] !== px[i]) throw new Error(`pixel ${i}: dcmtk ${got[i]}, written ${px[i]}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Data throughput: DICOM decode (slices/s) per transfer syntax for 512x512 int16 CT slices (written by our
 * writer, converted by dcmtk/GDCM), and cache reads (MB/s) of a 40-slice [::2] crop box from a 256-res
 * cube (a classifier-sized read) versus reading the whole cube.
 */
import { readDicomFile } from "../data/dicom.ts";
import { initCodecs } from "../data/codecs.ts";
import { writeCtSlice } from "../data/dicom_write.ts";
import { phantomStudy } from "../data/synth.ts";
import { readCube } from "../data/cache.ts";
import { resizeLinear16 } from "../data/resize.ts";

const dir = await Deno.makeTempDir();
const st = phantomStudy(5, 512);
const [Z, Y, X] = st.shape;
const z = Math.floor(Z / 2);
const slice = st.hu.slice(z * Y * X, (z + 1) * Y * X);
for (let i = 0; i < slice.length; i++) slice[i] += 1024;
const spec = {
  studyUid: "1.2.3",
  seriesUid: "1.2.3.4",
  sopUid: "1.2.3.4.5",
  patientId: "b",
  instanceNumber: 1,
  position: [0, 0, 0] as [number, number, number],
  orientation: [1, 0, 0, 0, 1, 0] as [number, number, number, number, number, number],
  pixelSpacing: [0.5, 0.5] as [number, number],
  sliceThickness: 1,
  rows: Y,
  cols: X,
  pixels: slice,
  rescaleIntercept: -1024,
  rescaleSlope: 1,
};
await Deno.writeFile(`${dir}/raw.dcm`, writeCtSlice(spec));
await Deno.writeFile(`${dir}/jll_ours.dcm`, writeCtSlice({ ...spec, jpegLossless: true }));
const conv: [string, string, string[]][] = [
  ["jll", "dcmcjpeg", []],
  ["jls", "dcmcjpls", []],
  ["j2k", "gdcmconv", ["--j2k"]],
  ["rle", "dcmcrle", []],
  ["deflate", "dcmconv", ["+td"]],
];
for (const [name, tool, args] of conv) {
  const o = await new Deno.Command(tool, { args: [...args, `${dir}/raw.dcm`, `${dir}/${name}.dcm`] })
    .output();
  if (!o.success) console.log(`(${tool} unavailable: skipping ${name})`);
}
await initCodecs();
const files = ["raw", "deflate", "jll_ours", "jll", "jls", "j2k", "rle"];
console.log("\nDICOM decode, 512x512 int16 slice:");
for (const f of files) {
  const path = `${dir}/${f}.dcm`;
  const bytes = await Deno.readFile(path).catch(() => null);
  if (!bytes) continue;
  readDicomFile(bytes, path);
  const n = 20, t0 = performance.now();
  for (let i = 0; i < n; i++) readDicomFile(bytes, path);
  const ms = (performance.now() - t0) / n;
  console.log(
    `  ${f.padEnd(9)} ${(bytes.length / 1024).toFixed(0).padStart(5)} KiB  ${ms.toFixed(1).padStart(6)} ms  ${
      (1000 / ms).toFixed(0).padStart(5)
    } slices/s`,
  );
}
// A 256-res cube of 300 slices in the cache layout.
const cache = `${dir}/cache`, uid = "bench";
await Deno.mkdir(`${cache}/${uid}`, { recursive: true });
const Zc = 300, small = new Int16Array(Zc * 256 * 256);
const one = resizeLinear16(slice, Y, X, 256, 256);
for (let k = 0; k < Zc; k++) small.set(one, k * 256 * 256);
await Deno.writeFile(`${cache}/${uid}/image_256.raw`, new Uint8Array(small.buffer));
await Deno.writeTextFile(
  `${cache}/${uid}/header.json`,
  JSON.stringify({ version: 1, uid, dtype: "int16", cubes: { image_256: [Zc, 256, 256] } }),
);
const time = async (box: Parameters<typeof readCube>[3]) => {
  await readCube(cache, uid, "image_256", box);
  const n = 10, t0 = performance.now();
  let bytes = 0;
  for (let i = 0; i < n; i++) bytes += (await readCube(cache, uid, "image_256", box)).data.byteLength;
  const s = (performance.now() - t0) / 1000;
  return `${((s / n) * 1000).toFixed(2)} ms per read, ${(bytes / s / 1e6).toFixed(0)} MB/s`;
};
console.log("\ncache reads, 300x256x256 int16 cube:");
console.log(
  `  40-slice [::2] crop, 128x128 box: ${await time({
    z: [100, 180],
    zStep: 2,
    y: [60, 188],
    x: [60, 188],
  })}`,
);
console.log(`  40 contiguous full slices:        ${await time({ z: [100, 140] })}`);
console.log(`  whole cube:                       ${await time({})}\n`);
await Deno.remove(dir, { recursive: true });

Deno.bench({ name: "no-op (figures are printed above)", n: 1 }, () => {});

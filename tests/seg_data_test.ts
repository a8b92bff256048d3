/**
 * The segmentation stage's samples against the seed's rules (seed-pipeline.md 2.1) written independently in
 * numpy, and the in-plane resampling against OpenCV.
 */
import { buildSegSample, segWindowStart } from "../train/seg_data.ts";
import { resampleSlices } from "../infer/resample.ts";
import { assertClose, prng, pyFixture } from "./helpers.ts";

Deno.test("window starts: uniform over [0, Z - slices - 1], 0 when the study fits", () => {
  const r = prng(3);
  const seen = new Set<number>();
  for (let i = 0; i < 4000; i++) seen.add(segWindowStart(70, 64, r));
  // Z - slices = 6 starts: 0..5; the last possible start (6) is never drawn (seed 7.9).
  if ([...seen].sort().join() !== "0,1,2,3,4,5") throw new Error(`starts ${[...seen].sort()}`);
  if (segWindowStart(64, 64, r) !== 0 || segWindowStart(30, 64, r) !== 0) {
    throw new Error("short study start");
  }
});

Deno.test("samples: zero padding to the window and to 16, z-score with [::2] statistics, thoracic -> 0", async () => {
  const r = prng(11);
  const cases = [
    { n: 5, H: 7, W: 7, slices: 8 }, // shorter than the window: pads to 8, then to 16
    { n: 20, H: 6, W: 6, slices: 20 }, // full window, padded to 32
    { n: 16, H: 5, W: 5, slices: 16 }, // already a multiple of 16
  ];
  const specs = cases.map((c) => {
    const vox = c.n * c.H * c.W;
    return {
      ...c,
      window: Array.from({ length: vox }, () => Math.round(r() * 3000 - 1000)),
      mask: Array.from({ length: vox }, () => Math.floor(r() * 12)),
      mean: 123.5 + r(),
      std: 456.25 + r(),
    };
  });
  const ref = await pyFixture("seg_data_fixtures.py", {
    samples: specs.map((s) => ({
      window: s.window,
      mask: s.mask,
      shape: [s.n, s.H, s.W],
      slices: s.slices,
      mean: s.mean,
      std: s.std,
    })),
    resize: [],
  });
  specs.forEach((s, i) => {
    const got = buildSegSample(
      {
        uid: "x",
        start: 0,
        slices: s.slices,
        size: s.H,
        mean: s.mean,
        std: s.std,
        plan: null,
      },
      Int16Array.from(s.window),
      Uint8Array.from(s.mask),
      [s.n, s.H, s.W],
    );
    const e = ref.samples[i];
    if (got.shape.join() !== e.shape.join()) throw new Error(`case ${i}: shape ${got.shape} vs ${e.shape}`);
    assertClose(got.image, e.image, `case ${i} image`, 1e-6, 1e-6);
    if (got.target.join() !== e.target.join()) throw new Error(`case ${i}: targets differ`);
  });
});

Deno.test("in-plane resampling equals OpenCV (INTER_AREA for integer factors, INTER_LINEAR, INTER_NEAREST)", async () => {
  const r = prng(5);
  const cases = [
    { shape: [3, 256, 256], size: 64, mode: "linear" },
    { shape: [2, 40, 40], size: 24, mode: "linear" },
    { shape: [2, 24, 24], size: 40, mode: "linear" },
    { shape: [3, 256, 256], size: 64, mode: "nearest" },
    { shape: [2, 64, 64], size: 256, mode: "nearest" },
    { shape: [2, 37, 37], size: 16, mode: "nearest" },
  ] as const;
  const data = cases.map((c) => {
    const n = c.shape[0] * c.shape[1] * c.shape[2];
    return c.mode === "nearest"
      ? Uint8Array.from({ length: n }, () => Math.floor(r() * 8))
      : Float32Array.from({ length: n }, () => Math.fround(r() * 2000 - 500));
  });
  const ref = await pyFixture("seg_data_fixtures.py", {
    samples: [],
    resize: cases.map((c, i) => ({ data: Array.from(data[i]), shape: c.shape, size: c.size, mode: c.mode })),
  });
  cases.forEach((c, i) => {
    const got = resampleSlices(data[i], c.shape, c.size, c.mode);
    if (c.mode === "nearest") {
      if (Array.from(got).join() !== ref.resize[i].data.join()) throw new Error(`case ${i}: nearest differs`);
    } else assertClose(got, ref.resize[i].data, `case ${i} ${c.mode} [${c.shape}] -> ${c.size}`, 1e-4, 1e-2);
  });
});

/**
 * The infer layer: the seed's window starts (hand-computed cases); predictVolume against forwards run here
 * window by window with the seed's seam rule applied by hand (labels and > 0.5 bits identical), against one
 * whole-volume forward when the padded study fits one window, an ensemble against the host argmax of the
 * summed softmaxes, and the `size` path against the model's softmax on the same resampled input, brought back
 * bilinearly in float64 here;
 * computeMeta and DiceMeter against numpy (tests/infer_fixtures.py), including a class absent from the
 * prediction, classes below the 11-voxel and 64-voxel rules and thoracic labels; storage round trip,
 * temporary-file cleanup and error messages; predictDataset on a hand-written cache (resumable).
 */
import { F, models, nn, noGrad, openDevice, tensor, tidy } from "../mod.ts";
import type { CacheHeader } from "../data/mod.ts";
import { keepLargestComponents, readCube } from "../data/mod.ts";
import {
  computeMeta,
  DiceMeter,
  predictDataset,
  predictVolume,
  readSegMetaFile,
  readSegPrediction,
  readStudyMeta,
  type SegPostprocess,
  type StudyMeta,
  windowStarts,
  writeSegPrediction,
} from "../infer/mod.ts";
import { resampleSlices } from "../infer/resample.ts";
import { assertRejectsWith, prng, pyFixture } from "./helpers.ts";

function assertEqualArrays(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${what}: element ${i}: ${a[i]} != expected ${b[i]}`);
  }
}

function assertJsonEqual(a: unknown, b: unknown, what: string): void {
  const sa = JSON.stringify(a), sb = JSON.stringify(b);
  if (sa !== sb) throw new Error(`${what}:\n got      ${sa}\n expected ${sb}`);
}

/** Raw CT-like values with some structure (so the tiny net's argmax is not constant). */
function rawVolume(seed: number, n: number): Int16Array {
  const r = prng(seed);
  return Int16Array.from({ length: n }, () => Math.round(-1000 + 3000 * r() * r()));
}

function stats(v: ArrayLike<number>): { mean: number; std: number } {
  let s = 0, q = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  const mean = s / v.length;
  for (let i = 0; i < v.length; i++) q += (v[i] - mean) ** 2;
  return { mean, std: Math.sqrt(q / v.length) };
}

/** Host argmax over C classes of probabilities [C, n] (first maximum) and the > 0.5 bits. */
function hostArgmax(
  p: ArrayLike<number>,
  C: number,
  n: number,
  scale = 1,
): { lab: Uint8Array; bits: Uint8Array } {
  const lab = new Uint8Array(n), bits = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 0; c < C; c++) {
      const v = p[c * n + i];
      if (v > p[best * n + i]) best = c;
      if (Math.fround(v / scale) > 0.5) bits[i] |= 1 << c;
    }
    lab[i] = best;
  }
  return { lab, bits };
}

Deno.test("windowStarts follows the seed's slicer", () => {
  const cases: [number, number, number, number[]][] = [
    [100, 384, 128, [0]], // shorter than a window
    [384, 384, 128, [0]], // exactly one window
    [640, 384, 128, [0, 256]], // exact fit: the second window ends at Z
    [700, 384, 128, [0, 256, 316]], // remainder: the last window moved back to end at Z
    [768, 384, 128, [0, 256, 384]],
    [1024, 384, 128, [0, 256, 512, 640]],
    [44, 16, 8, [0, 8, 16, 24, 28]],
    [17, 16, 0, [0, 1]],
  ];
  for (const [Z, w, o, want] of cases) {
    assertJsonEqual(windowStarts(Z, w, o), want, `windowStarts(${Z}, ${w}, ${o})`);
  }
  for (const [args, msg] of [[[10, 8, 8], "overlap < window"], [[10.5, 8, 2], "Z must be"]] as const) {
    try {
      windowStarts(args[0], args[1], args[2]);
      throw new Error("no error");
    } catch (e) {
      if (!(e as Error).message.includes(msg)) throw e;
    }
  }
});

Deno.test("predictVolume: seams, whole volume, ensemble, size", async (t) => {
  const device = await openDevice();
  nn.seedInit(1234);
  const tiny = () =>
    new models.CSNUNet({
      device,
      encoder: "r26ir",
      baseChannels: 4,
      decoderFilters: [8, 8, 8, 8],
      lastChannels: 8,
    })
      .eval();
  const net = tiny();
  const softmaxOf = async (m: models.CSNUNet, x: Float32Array, shape: number[]) => {
    const p = noGrad(() => tidy(() => F.softmax(m.forward(tensor(x, [1, 1, ...shape], { device })), 1)));
    const a = await p.toArray() as Float32Array;
    p.dispose();
    return a;
  };
  /** The padded, z-scored volume as predictVolume builds it (raw zeros appended, then (v - mean) / std). */
  const normalised = (raw: ArrayLike<number>, Zpad: number, plane: number, mean: number, std: number) => {
    const out = new Float32Array(Zpad * plane);
    for (let i = 0; i < raw.length; i++) out[i] = raw[i];
    const inv = 1 / std;
    for (let i = 0; i < out.length; i++) out[i] = (out[i] - mean) * inv;
    return out;
  };
  try {
    await t.step("seams: each window run separately, seam rule applied by hand", async () => {
      const [Z, H, W] = [42, 32, 32], plane = H * W, window = 16, overlap = 8, padMultiple = 4;
      const raw = rawVolume(7, Z * plane);
      const { mean, std } = stats(raw);
      const Zpad = 44;
      const x = normalised(raw, Zpad, plane, mean, std);
      // The seed's BatchSlice list for 44 slices, written out: (from, to, first written local index).
      const slices = [[0, 16, 0], [8, 24, 4], [16, 32, 4], [24, 40, 4], [28, 44, 4]];
      const lab = new Uint8Array(Zpad * plane), bits = new Uint8Array(Zpad * plane);
      for (const [from, to, first] of slices) {
        const p = await softmaxOf(net, x.slice(from * plane, to * plane), [to - from, H, W]);
        const h = hostArgmax(p, 8, (to - from) * plane);
        for (let i = first; i < to - from; i++) {
          lab.set(h.lab.subarray(i * plane, (i + 1) * plane), (from + i) * plane);
          bits.set(h.bits.subarray(i * plane, (i + 1) * plane), (from + i) * plane);
        }
      }
      const progress: string[] = [];
      const got = await predictVolume([net], { data: raw, shape: [Z, H, W] }, {
        mean,
        std,
        window,
        overlap,
        padMultiple,
        probs: true,
        onWindow: (d, n) => progress.push(`${d}/${n}`),
      });
      assertJsonEqual(got.shape, [Z, H, W], "shape");
      assertJsonEqual(progress, ["1/5", "2/5", "3/5", "4/5", "5/5"], "onWindow");
      assertEqualArrays(got.labels, lab.subarray(0, Z * plane), "labels");
      assertEqualArrays(got.above!, bits.subarray(0, Z * plane), "above bits");
      if (new Set(got.labels).size < 2) throw new Error("degenerate test: a single label predicted");
      // A wrong seam (each window writing from 0) must give other labels: the test can fail.
      const wrong = lab.slice();
      for (const [from, to] of slices.slice(1)) {
        const p = await softmaxOf(net, x.slice(from * plane, to * plane), [to - from, H, W]);
        wrong.set(hostArgmax(p, 8, (to - from) * plane).lab, from * plane);
      }
      if (wrong.subarray(0, Z * plane).every((v, i) => v === got.labels[i])) {
        throw new Error("seam rule not exercised: writing windows from 0 gives the same labels");
      }
    });

    await t.step("one window when the padded study fits: equals a whole-volume forward", async () => {
      const [Z, H, W] = [13, 32, 32], plane = H * W;
      const raw = rawVolume(8, Z * plane);
      const { mean, std } = stats(raw);
      const p = await softmaxOf(net, normalised(raw, 16, plane, mean, std), [16, H, W]);
      const want = hostArgmax(p, 8, 16 * plane);
      const got = await predictVolume([net], { data: raw, shape: [Z, H, W] }, { mean, std, padMultiple: 8 });
      assertEqualArrays(got.labels, want.lab.subarray(0, Z * plane), "labels");
      if (got.above) throw new Error("above returned without probs");
    });

    await t.step("ensemble of 2: argmax of the summed softmax; bits of the mean", async () => {
      const net2 = tiny();
      try {
        const [Z, H, W] = [8, 32, 32], plane = H * W;
        const raw = rawVolume(9, Z * plane);
        const { mean, std } = stats(raw);
        const x = normalised(raw, Z, plane, mean, std);
        const p1 = await softmaxOf(net, x, [Z, H, W]), p2 = await softmaxOf(net2, x, [Z, H, W]);
        const sum = p1.map((v, i) => Math.fround(v + p2[i]));
        const want = hostArgmax(sum, 8, Z * plane, 2);
        const got = await predictVolume([net, net2], { data: raw, shape: [Z, H, W] }, {
          mean,
          std,
          padMultiple: 8,
          probs: true,
        });
        assertEqualArrays(got.labels, want.lab, "ensemble labels");
        assertEqualArrays(got.above!, want.bits, "ensemble bits");
        const single = hostArgmax(p1, 8, Z * plane).lab;
        if (single.every((v, i) => v === got.labels[i])) throw new Error("ensemble equals model 1 alone");
      } finally {
        net2.dispose();
      }
    });

    await t.step(
      "size: resampled to the model's size, probabilities back bilinearly, then argmax",
      async () => {
        // 40 slices of 128 x 128 from a 32 x 32 model (4x in plane).
        const [Z, H, W] = [40, 128, 128], C = 8, S = 32;
        const raw = rawVolume(10, Z * H * W);
        const { mean, std } = stats(raw);
        const got = await predictVolume([net], { data: raw, shape: [Z, H, W] }, {
          mean,
          std,
          padMultiple: 8,
          size: S,
          probs: true,
        });
        assertJsonEqual(got.shape, [Z, H, W], "shape");
        if (got.labels.length !== Z * H * W || got.above!.length !== Z * H * W) {
          throw new Error("output sizes");
        }
        // The model's softmax on the resampled, padded, z-scored volume; then bilinear (align_corners false)
        // per slice in float64, argmax and > 0.5 here. Voxels within 1e-5 of a tie or of 0.5 are not judged.
        const small = resampleSlices(Float32Array.from(raw), [Z, H, W], S, "linear");
        const p = await softmaxOf(net, normalised(small, Z, S * S, mean, std), [Z, S, S]);
        const taps = (o: number) => {
          const src = Math.max((o + 0.5) * S / H - 0.5, 0), i0 = Math.min(Math.floor(src), S - 1);
          return [i0, Math.min(i0 + 1, S - 1), src - i0] as const;
        };
        let judged = 0;
        for (let z = 0; z < Z; z++) {
          for (let y = 0; y < H; y++) {
            const [y0, y1, ly] = taps(y);
            for (let x = 0; x < W; x++) {
              const [x0, x1, lx] = taps(x);
              const q = Array.from({ length: C }, (_, c) => {
                const at = (yy: number, xx: number) => p[((c * Z + z) * S + yy) * S + xx];
                return (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
                  ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
              });
              const order = [...q.keys()].sort((a, b) => q[b] - q[a]);
              const i = (z * H + y) * W + x;
              if (q[order[0]] - q[order[1]] > 1e-5) {
                judged++;
                if (got.labels[i] !== order[0]) {
                  throw new Error(`label at ${i}: ${got.labels[i]}, expected ${order[0]}`);
                }
              }
              for (let c = 0; c < C; c++) {
                if (Math.abs(q[c] - 0.5) > 1e-5 && ((got.above![i] >> c) & 1) !== (q[c] > 0.5 ? 1 : 0)) {
                  throw new Error(`bit ${c} at ${i}: expected ${q[c] > 0.5 ? 1 : 0} (p = ${q[c]})`);
                }
              }
            }
          }
        }
        if (judged < 0.99 * Z * H * W) throw new Error(`only ${judged} of ${Z * H * W} voxels judged`);
      },
    );

    await t.step("bad input gives clear errors", async () => {
      const img = { data: new Float32Array(8 * 32 * 32), shape: [8, 32, 32] as [number, number, number] };
      await assertRejectsWith(predictVolume([], img, { mean: 0, std: 1 }), "non-empty");
      await assertRejectsWith(predictVolume([net], img, { mean: 0, std: 0 }), "std > 0");
      await assertRejectsWith(
        predictVolume([net], { data: new Float32Array(5), shape: [8, 32, 32] }, { mean: 0, std: 1 }),
        "image.data has 5 values",
      );
      await assertRejectsWith(predictVolume([net], img, { mean: 0, std: 1, overlap: 400 }), "overlap 400");
      net.train();
      await assertRejectsWith(predictVolume([net], img, { mean: 0, std: 1 }), "model 0 is in training mode");
      net.eval();
    });

    await t.step("predictDataset: [::2] cube, header statistics, stored and resumable", async () => {
      const dir = await Deno.makeTempDir();
      try {
        const cache = `${dir}/cache`;
        const studies = [["1.2.3", 9], ["1.2.4", 4]] as const;
        for (const [uid, Z] of studies) {
          await Deno.mkdir(`${cache}/${uid}`, { recursive: true });
          const vol = rawVolume(Z * 31, Z * 256 * 256);
          const all = stats(vol);
          const every2 = stats(vol.filter((_, i) => Math.floor(i / 65536) % 2 === 0));
          const h: CacheHeader = {
            version: 1,
            uid,
            units: "stored",
            dtype: "int16",
            cubes: { image_256: [Z, 256, 256] },
            spacing: [1, 0.5, 0.5],
            rescale: { slope: 1, intercept: 0 },
            photometric: "MONOCHROME2",
            mean: all.mean,
            std: all.std,
            mean2: every2.mean,
            std2: every2.std,
          };
          await Deno.writeTextFile(`${cache}/${uid}/header.json`, JSON.stringify(h));
          await Deno.writeFile(`${cache}/${uid}/image_256.raw`, new Uint8Array(vol.buffer));
        }
        const uids = studies.map((s) => s[0]);
        const seen: string[] = [];
        const run = (weights: string[], force = false, postprocess?: SegPostprocess) =>
          predictDataset({
            cache,
            uids,
            models: [net],
            size: 32,
            weights,
            force,
            postprocess,
            onStudy: (p) => seen.push(`${p.uid}:${p.skipped}`),
          });
        // Each study's stored labels and metadata against predictVolume's, post-processed as `how`.
        const check = async (how: SegPostprocess) => {
          let removed = 0;
          for (const [uid, Z] of studies) {
            const h = JSON.parse(await Deno.readTextFile(`${cache}/${uid}/header.json`)) as CacheHeader;
            const img = await readCube(cache, uid, "image_256", { zStep: 2 });
            const want = await predictVolume([net], img, { mean: h.mean2, std: h.std2, size: 32 });
            const labels = how === "largest" ? keepLargestComponents(want.labels, want.shape) : want.labels;
            removed += labels.filter((v, i) => v !== want.labels[i]).length;
            const got = await readSegPrediction(cache, uid);
            assertJsonEqual(got.shape, [Math.ceil(Z / 2), 256, 256], `${uid} shape`);
            assertEqualArrays(got.labels, labels, `${uid} labels (${how})`);
            assertJsonEqual(
              got.meta,
              computeMeta(labels, want.shape, { mean: h.mean, std: h.std }),
              `${uid} meta (${how})`,
            );
            assertJsonEqual((await readSegMetaFile(cache, uid)).postprocess, how, `${uid} postprocess`);
          }
          return removed;
        };
        const first = await run(["tiny_a"]);
        assertJsonEqual(first, { predicted: uids, skipped: [] }, "first run");
        // The untrained net scatters its labels: the default post-processing must have removed islands.
        if (await check("largest") === 0) throw new Error("keepLargestComponents removed nothing");
        assertJsonEqual(await run(["tiny_a"]), { predicted: [], skipped: uids }, "rerun skips");
        assertJsonEqual(
          await run(["tiny_a"], false, "none"),
          { predicted: uids, skipped: [] },
          "another post-processing predicts again",
        );
        await check("none");
        assertJsonEqual(
          await run(["tiny_a"], false, "none"),
          { predicted: [], skipped: uids },
          "rerun skips",
        );
        assertJsonEqual(
          await run(["tiny_b"]),
          { predicted: uids, skipped: [] },
          "other weights predict again",
        );
        assertJsonEqual(await run(["tiny_b"], true), { predicted: uids, skipped: [] }, "force");
        assertJsonEqual(seen.length, 12, "onStudy calls");
        const meta = JSON.parse(await Deno.readTextFile(`${cache}/1.2.3/seg_meta.json`));
        assertJsonEqual(meta.weights, ["tiny_b"], "stored weights");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  } finally {
    net.dispose();
    device.destroy();
  }
});

/** A label volume with blobs of labels 1..7 (4 absent), one label in two disconnected pieces, and a 9. */
function blobVolume(seed: number, [Z, H, W]: number[]): Uint8Array {
  const r = prng(seed);
  const v = new Uint8Array(Z * H * W);
  const box = (lab: number) => {
    const z0 = Math.floor(r() * Z), y0 = Math.floor(r() * H), x0 = Math.floor(r() * W);
    const z1 = Math.min(Z, z0 + 1 + Math.floor(r() * 3)), y1 = Math.min(H, y0 + 1 + Math.floor(r() * 6));
    const x1 = Math.min(W, x0 + 1 + Math.floor(r() * 6));
    for (let z = z0; z < z1; z++) {
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (r() < 0.8) v[(z * H + y) * W + x] = lab;
    }
  };
  for (const lab of [1, 2, 3, 5, 6, 7, 2, 9]) box(lab);
  return v;
}

Deno.test("computeMeta and DiceMeter match numpy", async () => {
  const shapes = [[5, 12, 14], [3, 9, 7], [1, 4, 4]];
  const vols = shapes.map((s, i) => blobVolume(40 + i, s));
  vols[2].fill(0);
  // The dice studies: a good one, one where class 3 is never predicted, one small (< 64 voxels of P + G),
  // and truth with thoracic labels (8, 9) that count as background.
  const r = prng(77);
  const n = 6 * 10 * 10;
  const studies: { above: Uint8Array; truth: Uint8Array }[] = [];
  for (let s = 0; s < 4; s++) {
    const truth = new Uint8Array(n), above = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = Math.floor(i / (n / 8)); // contiguous runs of 75 voxels per class 0..7
      truth[i] = s === 2 ? (i < 12 ? 5 : 0) : c === 0 && s === 3 ? 8 + (i % 2) : c;
      if (truth[i] >= 1 && truth[i] <= 7 && r() < 0.85) above[i] |= 1 << truth[i];
      if (r() < 0.1) above[i] |= 1 << (1 + Math.floor(r() * 7));
      if (r() < 0.3) above[i] |= 1; // background bits are ignored
    }
    if (s === 1) { for (let i = 0; i < n; i++) above[i] &= ~(1 << 3); }
    if (s === 2) { for (let i = 0; i < n; i++) above[i] &= 1 << 5 | 1; // |P| + |G| < 64 for class 5
     }
    studies.push({ above, truth });
  }
  // Class 6 scored in no study: every study's truth has <= 10 voxels of it.
  for (const st of studies) {
    let k = 0;
    for (let i = 0; i < n; i++) if (st.truth[i] === 6 && k++ >= 10) st.truth[i] = 0;
  }
  const ref = await pyFixture("infer_fixtures.py", {
    meta: vols.map((v, i) => ({ labels: Array.from(v), shape: shapes[i] })),
    dice: [
      { studies: studies.map((s) => ({ above: Array.from(s.above), truth: Array.from(s.truth) })) },
      { studies: [{ above: Array.from(studies[2].above), truth: Array.from(studies[2].truth) }] },
    ],
  });
  vols.forEach((v, i) => {
    const m = computeMeta(v, shapes[i], { mean: 1.5, std: 2.5 });
    assertJsonEqual(m, { ...ref.meta[i], image_mean: 1.5, image_std: 2.5 }, `meta ${i}`);
  });
  if (!("2" in ref.meta[0].boxes) || "4" in ref.meta[0].boxes || !("9" in ref.meta[0].boxes)) {
    throw new Error("fixture volume lacks the intended labels");
  }
  const refDice = ref.dice as { dice: number | null; perClass: (number | null)[] }[];
  const meter = new DiceMeter();
  for (const s of studies) meter.add(s.above, s.truth);
  const got = meter.compute();
  const close = (a: number | null, b: number | null, what: string) => {
    if (a === null || b === null ? a !== b : Math.abs(a - b) > 1e-12) {
      throw new Error(`${what}: ${a} vs numpy ${b}`);
    }
  };
  got.perClass.forEach((v, c) => close(v, refDice[0].perClass[c], `class ${c + 1}`));
  close(got.dice, refDice[0].dice, "mean dice");
  if (got.perClass[5] !== null) throw new Error("class 6 should be unscored");
  if (!(got.perClass[2]! < 0.8)) {
    throw new Error("class 3 (never predicted in one study) should be penalised");
  }
  const small = new DiceMeter();
  small.add(studies[2].above, studies[2].truth);
  const s = small.compute();
  close(s.dice, refDice[1].dice, "small study dice");
  assertJsonEqual(s.perClass, [null, null, null, null, 1, null, null], "< 64 voxels counts as 1");
  if (!Number.isNaN(new DiceMeter().compute().dice)) throw new Error("empty meter should give NaN");
  try {
    meter.add(new Uint8Array(3), new Uint8Array(4));
    throw new Error("no error");
  } catch (e) {
    if (!(e as Error).message.includes("above has 3 voxels, truth 4")) throw e;
  }
});

Deno.test("seg prediction storage: round trip, atomic writes, clear errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const shape = [3, 9, 7];
    const labels = blobVolume(5, shape);
    const meta: StudyMeta = computeMeta(labels, shape, { mean: 100.25, std: 30.5 });
    await Deno.mkdir(`${dir}/u1`);
    await writeSegPrediction(dir, "u1", labels, shape, meta, ["w_a", "w_b"]);
    const back = await readSegPrediction(dir, "u1");
    assertEqualArrays(back.labels, labels, "labels");
    assertJsonEqual(back.shape, shape, "shape");
    assertJsonEqual(back.meta, meta, "meta");
    assertJsonEqual(await readStudyMeta(dir, "u1"), meta, "readStudyMeta");
    const raw = await Deno.readFile(`${dir}/u1/seg_pred.raw`);
    assertEqualArrays(raw, labels, "seg_pred.raw is the plain u8 volume");
    const listing = (d: string) => [...Deno.readDirSync(d)].map((e) => e.name).sort();
    assertJsonEqual(listing(`${dir}/u1`), ["seg_meta.json", "seg_pred.raw"], "no temporary files left");
    // A failed rename (a directory in the way) leaves no temporary file and names the path.
    await Deno.mkdir(`${dir}/u2/seg_meta.json/blocker`, { recursive: true });
    await assertRejectsWith(
      writeSegPrediction(dir, "u2", labels, shape, meta, []),
      `${dir}/u2/seg_meta.json`,
    );
    assertJsonEqual(
      await listing(`${dir}/u2`),
      ["seg_meta.json", "seg_pred.raw"],
      "temporary removed on failure",
    );
    await assertRejectsWith(
      writeSegPrediction(dir, "nope", labels, shape, meta, []),
      `${dir}/nope`,
      "does not exist",
    );
    await assertRejectsWith(writeSegPrediction(dir, "u1", labels, [3, 9, 8], meta, []), "do not fill shape");
    await assertRejectsWith(
      readSegPrediction(dir, "u3"),
      `${dir}/u3/seg_meta.json`,
      "no segmentation prediction",
    );
    await Deno.writeFile(`${dir}/u1/seg_pred.raw`, labels.subarray(1));
    await assertRejectsWith(readSegPrediction(dir, "u1"), `${dir}/u1/seg_pred.raw`, "188 bytes");
    await Deno.writeTextFile(`${dir}/u1/seg_meta.json`, "{");
    await assertRejectsWith(readStudyMeta(dir, "u1"), `${dir}/u1/seg_meta.json`, "not valid JSON");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

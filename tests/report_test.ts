/**
 * @file The report pages: the PNG encoder against two independent Python decoders (a zlib + struct reader that
 * checks CRCs and all filter types, and OpenCV), the study page built from a small synthetic study (images,
 * bars, escaping, self-containment, the pixels of the views), the index page, and a headless Chromium render
 * when Debian's chromium is installed.
 */
import { crc32, encodePng } from "../infer/png.ts";
import {
  BONE_WINDOW,
  cropSlice,
  indexHtml,
  LABEL_COLORS,
  OVERLAY_ALPHA,
  spineViews,
  type StudyReport,
  studyReportHtml,
} from "../infer/report.ts";
import { computeMeta } from "../infer/meta.ts";
import { assertRejectsWith, prng } from "./helpers.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";
const FIXTURES = new URL("./report_fixtures.py", import.meta.url).pathname;

interface Decoded {
  width: number;
  height: number;
  channels: number;
  pixels: number[];
  cv2: number[];
  chunks: string[];
  coloured: number;
  error: string | null;
}

function b64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function decodeInPython(pngsB64: (string | { stats: string })[]): Promise<Decoded[]> {
  const p = new Deno.Command(PY, { args: [FIXTURES], stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(pngsB64)));
  await w.close();
  const o = await p.output();
  if (!o.success) throw new Error(`report_fixtures.py failed:\n${new TextDecoder().decode(o.stderr)}`);
  return JSON.parse(new TextDecoder().decode(o.stdout));
}

function assertEqualArrays(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${what}: element ${i}: ${a[i]} != expected ${b[i]}`);
  }
}

function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

Deno.test("crc32 check value", () => {
  assert(crc32(new TextEncoder().encode("123456789")) === 0xcbf43926, "crc32('123456789') != 0xCBF43926");
  assert(crc32(new Uint8Array(0)) === 0, "crc32 of nothing != 0");
});

Deno.test("encodePng round trip through a pure-Python reader and cv2.imdecode, odd sizes", async () => {
  const r = prng(7);
  const cases: { w: number; h: number; c: 1 | 3 }[] = [
    { w: 1, h: 1, c: 1 },
    { w: 7, h: 5, c: 1 },
    { w: 13, h: 9, c: 3 },
    { w: 1, h: 11, c: 3 },
    { w: 301, h: 3, c: 3 },
    { w: 64, h: 33, c: 1 },
  ];
  const inputs = cases.map(({ w, h, c }, k) => {
    const px = new Uint8Array(w * h * c);
    // Half random bytes, half smooth ramps with 0/255 extremes, so wrap-around in the Sub filter is exercised.
    for (let i = 0; i < px.length; i++) px[i] = k % 2 ? Math.floor(r() * 256) : (i * 37) % 256;
    return px;
  });
  const pngs = await Promise.all(cases.map(({ w, h, c }, k) => encodePng(inputs[k], w, h, c)));
  const dec = await decodeInPython(pngs.map(b64));
  cases.forEach(({ w, h, c }, k) => {
    const d = dec[k], what = `${w}x${h}x${c}`;
    if (d.error) throw new Error(`${what}: Python could not decode: ${d.error}`);
    assert(
      d.width === w && d.height === h && d.channels === c,
      `${what}: header ${d.width}x${d.height}x${d.channels}`,
    );
    assert(d.chunks.join() === "IHDR,IDAT,IEND", `${what}: chunks ${d.chunks}`);
    assertEqualArrays(d.pixels, inputs[k], `${what} pure reader`);
    assertEqualArrays(d.cv2, inputs[k], `${what} cv2.imdecode`);
  });
});

Deno.test("encodePng rejects bad input", async () => {
  await assertRejectsWith(encodePng(new Uint8Array(5), 2, 2, 1), "encodePng", "5 bytes", "2x2x1");
  await assertRejectsWith(encodePng(new Uint8Array(8), 2, 2, 2 as 1), "channels must be 1 or 3");
  await assertRejectsWith(encodePng(new Uint8Array(0), 0, 2, 1), "width must be a positive integer");
  await assertRejectsWith(encodePng([1, 2] as unknown as Uint8Array, 1, 2, 1), "must be a Uint8Array");
});

// A small synthetic study: 40 slices (20 on the [::2] label grid), C1..C7 as boxes stacked in z, each two
// label slices tall, at y 120..140, x 96..121 (centre y 130, x 108.5 -> 109).
const Z = 40, N = 256;
const UID = `1.2.3<script>alert("x")</script>&'`;
const HU_BONE = 700, INTERCEPT = -1024;
function labelAt(k: number, y: number, x: number): number {
  const v = Math.floor((k - 3) / 2) + 1;
  return k >= 3 && v <= 7 && y >= 120 && y <= 140 && x >= 96 && x <= 121 ? v : 0;
}
function imageAt(z: number, y: number, x: number): number {
  // Stored values: HU + 1024; texture so that the windowing is visible, bone where the labels are.
  return (labelAt(z >> 1, y, x) ? HU_BONE : ((x * 7 + y * 3 + z * 11) % 400) - 200) - INTERCEPT;
}

function syntheticStudy(opts: { dropC7?: boolean; rescale?: boolean } = {}): StudyReport {
  const image = new Int16Array(Z * N * N);
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < N; y++) for (let x = 0; x < N; x++) image[(z * N + y) * N + x] = imageAt(z, y, x);
  }
  const Zl = Z / 2;
  const labels = new Uint8Array(Zl * N * N);
  for (let k = 0; k < Zl; k++) {
    for (let y = 0; y < N; y++) {
      for (let x = 0; x < N; x++) {
        const v = labelAt(k, y, x);
        if (!(opts.dropC7 && v === 7)) labels[(k * N + y) * N + x] = v;
      }
    }
  }
  const meta = computeMeta(labels, [Zl, N, N], { mean: 0, std: 1 });
  const D = 6, S = 24;
  const crops = [1, 2, 3, 4, 5, 6, 7].map((v) => {
    if (opts.dropC7 && v === 7) return { vertebra: v, crop: null };
    const crop = new Float32Array(3 * D * S * S);
    // 4 slices of data then 2 of zero padding: the middle used slice is 1, a checkerboard; others ramps.
    for (let d = 0; d < 4; d++) {
      for (let i = 0; i < S * S; i++) {
        const [yy, xx] = [Math.floor(i / S), i % S];
        crop[d * S * S + i] = d === 1 ? ((yy + xx) % 2 ? 2.5 : -1.5) : (xx - S / 2) / 4 + v;
        crop[(2 * D + d) * S * S + i] = yy > 4 && yy < 18 ? v : 0;
      }
    }
    return { vertebra: v, crop, shape: [3, D, S, S] };
  });
  return {
    uid: UID,
    image: opts.rescale === false
      ? { data: image, shape: [Z, N, N] }
      : { data: image, shape: [Z, N, N], slope: 1, intercept: INTERCEPT, spacing: [1.25, 0.7, 0.7] },
    labels: { data: labels, shape: [Zl, N, N] },
    meta,
    crops,
    probabilities: [0.9, 0.05, 0.6, 0.1, 0.02, 0.4, 0.97, 0.3],
    truth: [1, 0, 1, 0, 0, 1, 0, 0],
    timings: { load: 812.4, segment: 20431, "crops & classify": 5.2 },
  };
}

function dataUris(html: string): string[] {
  return [...html.matchAll(/data:image\/png;base64,([A-Za-z0-9+/=]+)/g)].map((m) => m[1]);
}

function assertSelfContained(html: string, what: string): void {
  for (
    const bad of [/https?:\/\//i, /(src|href)\s*=\s*["']?\/\//i, /<script/i, /<link/i, /<iframe/i, /@import/i]
  ) {
    assert(!bad.test(html), `${what}: matches ${bad}`);
  }
  for (const m of html.matchAll(/\ssrc\s*=\s*"([^"]*)"/g)) {
    assert(
      m[1].startsWith("data:image/png;base64,"),
      `${what}: src "${m[1].slice(0, 40)}" is not a PNG data URI`,
    );
  }
}

Deno.test("spineViews: planes through the label centre, bone window, labels blended over every 2 slices", () => {
  const r = syntheticStudy();
  const v = spineViews(r);
  assert(v.x === 109 && v.y === 130, `planes x ${v.x}, y ${v.y}, expected 109, 130`);
  const lo = BONE_WINDOW.level - BONE_WINDOW.width / 2 - INTERCEPT, hi = lo + BONE_WINDOW.width;
  assert(v.windowKind === "bone HU" && v.window[0] === lo && v.window[1] === hi, `window ${v.window}`);
  assert(v.sagittal.width === N && v.sagittal.height === Z && v.coronal.width === N, "view sizes");
  const gray = (s: number) => 255 * Math.min(1, Math.max(0, (s - lo) / (hi - lo)));
  const expect = (z: number, y: number, x: number): number[] => {
    const g = gray(imageAt(z, y, x)), lab = labelAt(z >> 1, y, x);
    if (!lab) return [Math.round(g), Math.round(g), Math.round(g)];
    return LABEL_COLORS[lab].map((c) => Math.round(g * (1 - OVERLAY_ALPHA) + c * OVERLAY_ALPHA));
  };
  // Every pixel of both views against the definition.
  for (let z = 0; z < Z; z++) {
    for (let j = 0; j < N; j++) {
      const s = [...v.sagittal.rgb.subarray((z * N + j) * 3, (z * N + j) * 3 + 3)];
      const c = [...v.coronal.rgb.subarray((z * N + j) * 3, (z * N + j) * 3 + 3)];
      assertEqualArrays(s, expect(z, j, v.x), `sagittal z ${z} y ${j}`);
      assertEqualArrays(c, expect(z, v.y, j), `coronal z ${z} x ${j}`);
    }
  }
  // Odd image slices take the label of the slice above them on the [::2] grid: C1 covers z 6..9.
  for (const z of [6, 7, 8, 9]) {
    assert(
      v.sagittal.rgb[(z * N + 130) * 3] !== v.sagittal.rgb[(z * N + 130) * 3 + 1],
      `z ${z} not coloured`,
    );
  }
  assert(v.sagittal.rgb[(5 * N + 130) * 3] === v.sagittal.rgb[(5 * N + 130) * 3 + 1], "z 5 coloured");

  const p = spineViews(syntheticStudy({ rescale: false }));
  assert(p.windowKind === "percentile", "no rescale -> percentile window");
  // Stored values are about uniform over 824..1223 outside bone and 1724 in it (0.58% of the voxels, so the
  // 99.5th percentile is bone).
  assert(p.window[0] >= 824 && p.window[0] <= 836 && p.window[1] === 1724, `window ${p.window}`);
});

Deno.test("cropSlice: middle of the unpadded slices of channel 0, percentile window", () => {
  const r = syntheticStudy();
  const c = r.crops[2];
  const s = cropSlice(c.crop!, c.shape!);
  assert(s.slice === 1 && s.depth === 6 && s.size === 24, `slice ${s.slice} depth ${s.depth} size ${s.size}`);
  for (let i = 0; i < 24 * 24; i++) {
    const want = (Math.floor(i / 24) + (i % 24)) % 2 ? 255 : 0;
    if (s.gray[i] !== want) throw new Error(`crop pixel ${i}: ${s.gray[i]} != ${want}`);
  }
  let err = "";
  try {
    cropSlice(new Float32Array(10), [3, 1, 2, 3], "crop of C2");
  } catch (e) {
    err = (e as Error).message;
  }
  assert(err.includes("crop of C2") && err.includes("[3, D, S, S]"), `error "${err}"`);
});

Deno.test("studyReportHtml: 2 views + 7 crops, 8 bars, escaped uid, self-contained, PNGs decode", async () => {
  const r = syntheticStudy();
  const html = await studyReportHtml(r);
  const uris = dataUris(html);
  assert(uris.length === 9, `${uris.length} PNG data URIs, expected 9 (2 views + 7 crops)`);
  assert((html.match(/class="bar"/g) ?? []).length === 8, "8 bars");
  assert((html.match(/class="truth"/g) ?? []).length === 8, "8 truth marks");
  assert(!html.includes(UID) && !html.includes("<script"), "uid not escaped");
  assert(
    html.includes("1.2.3&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"),
    "escaped uid missing",
  );
  assertSelfContained(html, "report");
  for (const s of ["Sagittal, x = 109", "Coronal, y = 130", "20.43 s", "812 ms", "crops &amp; classify"]) {
    assert(html.includes(s), `report lacks "${s}"`);
  }
  for (let v = 1; v <= 7; v++) {
    assert(html.includes(`<b>C${v}</b>: 1,092 voxels`), `C${v} voxel count`); // 2 slices x 21 x 26
    assert(html.includes(`>C${v}</span>`), `legend C${v}`);
  }
  assert(!html.includes("not found"), "no vertebra should be missing");
  // The embedded images are exactly the rendered views and crop slices.
  const views = spineViews(r);
  const dec = await decodeInPython(uris);
  const expected = [
    { px: views.sagittal.rgb, w: N, h: Z, c: 3 },
    { px: views.coronal.rgb, w: N, h: Z, c: 3 },
    ...r.crops.map((c) => ({ px: cropSlice(c.crop!, c.shape!).gray, w: 24, h: 24, c: 1 })),
  ];
  expected.forEach((e, k) => {
    const d = dec[k];
    if (d.error) throw new Error(`image ${k}: ${d.error}`);
    assert(
      d.width === e.w && d.height === e.h && d.channels === e.c,
      `image ${k}: ${d.width}x${d.height}x${d.channels}`,
    );
    assertEqualArrays(d.pixels, e.px, `image ${k}`);
  });
  // Views keep the voxel aspect: 40 slices x 1.25 mm over 256 x 0.7 mm shown 400 px wide.
  assert(html.includes(`width="400" height="${Math.round(40 * (400 / 256) * (1.25 / 0.7))}"`), "view aspect");
  // Crops given as their pictures (what the inference hands its writer Worker) make the same page.
  const crops = r.crops.map((c) => ({
    vertebra: c.vertebra,
    crop: null,
    view: cropSlice(c.crop!, c.shape!),
  }));
  assert((await studyReportHtml({ ...r, crops })) === html, "crops as views: a different page");
});

Deno.test("studyReportHtml: a missing vertebra shows 'not found'; bad input names the field", async () => {
  const r = syntheticStudy({ dropC7: true });
  r.truth = null;
  const html = await studyReportHtml(r);
  assert(dataUris(html).length === 8, "2 views + 6 crops");
  assert(html.includes("<b>C7</b>: not found"), "C7 not found");
  assert(
    (html.match(/class="bar"/g) ?? []).length === 8 && !html.includes('class="truth"'),
    "bars without truth",
  );
  assertSelfContained(html, "report without C7");

  const bad = syntheticStudy();
  await assertRejectsWith(
    studyReportHtml({ ...bad, labels: { data: bad.labels.data, shape: [19, N, N] } }),
    "labels shape [19,256,256]",
    "[ceil(Z/2), H, W] = [20, 256, 256]",
  );
  await assertRejectsWith(
    studyReportHtml({ ...bad, probabilities: [0.5, 0.5] }),
    "probabilities",
    "8 numbers",
  );
  await assertRejectsWith(studyReportHtml({ ...bad, truth: [1, 0, 0, 0, 0, 0, 0, 2] }), "truth", "[0, 1]");
  await assertRejectsWith(
    studyReportHtml({ ...bad, crops: [{ vertebra: 9, crop: null }] }),
    "crop vertebra must be 1..7",
  );
  await assertRejectsWith(
    studyReportHtml({ ...bad, image: { data: new Int16Array(5), shape: [Z, N, N] } }),
    "image has 5 values",
  );
});

Deno.test("indexHtml: relative links, probabilities, failures with their reason", () => {
  const html = indexHtml([
    { uid: "1.2.826.1", probabilities: [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ok: true },
    { uid: "1.2.826.2<b>", probabilities: null, ok: false, error: "DICOM: no slices in <dir>" },
    { uid: "1.2.826.3", probabilities: [0, 0, 0, 0, 0, 0, 0, 1], ok: true, reportPath: "sub/3.html" },
  ]);
  assertSelfContained(html, "index");
  for (
    const s of [
      `<a href="1.2.826.1/report.html">1.2.826.1</a>`,
      `<a href="sub/3.html">`,
      "3 studies: 2 reported",
      "1 failed",
      "1.2.826.2&lt;b&gt;",
      "reason: DICOM: no slices in &lt;dir&gt;",
      ">0.900<",
      ">0.700<",
    ]
  ) assert(html.includes(s), `index lacks ${s}`);
  assert(
    !html.includes("1.2.826.2<b>") && !html.includes("1.2.826.2&lt;b&gt;/report.html"),
    "failed study linked",
  );
  let err = "";
  try {
    indexHtml([{
      uid: "x",
      probabilities: [0, 0, 0, 0, 0, 0, 0, 0],
      ok: true,
      reportPath: "https://e.com/x",
    }]);
  } catch (e) {
    err = (e as Error).message;
  }
  assert(err.includes("reportPath must be relative"), `error "${err}"`);
});

Deno.test("indexHtml with a truth file: score beside the baseline, truth per cell, wrong calls, dice table", () => {
  const summary = {
    score: { score: 0.61234, studies: 2 },
    constant: {
      score: 0.54321,
      source: "constant prediction at the held-out prevalence (an oracle baseline)",
    },
    ratio: 0.61234 / 0.54321,
    difference: { difference: 0.06913, low: -0.0123, high: 0.15, level: 0.95, resamples: 2000, studies: 2 },
    dice: { perLevel: [0.9, 0.8, null, 0.7, 0.6, 0.5, 0.4], mean: 0.65, studies: 1 },
  };
  const html = indexHtml([
    {
      uid: "1.2.1",
      ok: true,
      probabilities: [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
      truth: [1, 0, 1, 0, 0, 0, 1, 0],
      dice: [0.9, 0.8, null, 0.7, 0.6, 0.5, 0.4],
    },
    { uid: "1.2.2", ok: true, probabilities: [0.2, 0, 0, 0, 0, 0, 0, 0], truth: [0, 0, 0, 0, 0, 0, 0, 0] },
    { uid: "1.2.3", ok: false, probabilities: null, error: "unreadable" },
  ], summary);
  assertSelfContained(html, "index");
  for (
    const s of [
      "Competition score <b>0.6123</b> over 2 studies vs <b>0.5432</b> for the best constant prediction",
      "ratio 1.13",
      '<span class="fail">difference +0.069, 95 % interval -0.012 to +0.150 over 2 studies: within the noise',
      "Baseline: constant prediction at the held-out prevalence (an oracle baseline).",
      '>0.900 <span class="small">(1)</span><',
      '>0.000 <span class="small">(0)</span><',
      "Segmentation dice",
      "<th>mean over 1 study</th>",
      "no ground-truth mask",
    ]
  ) assert(html.includes(s), `index lacks ${s}`);
  // Wrong at 0.5 in study 1: C2 (0.2 vs 1), C5 (0.5 vs 0), C6 (0.6 vs 1 is right), C7 (0.7 vs 0).
  const wrong = [...html.matchAll(/<td class="num wrong"[^>]*title="truth (\d), wrong at 0.5">([\d.]+)/g)]
    .map((m) => `${m[2]}:${m[1]}`);
  assert(wrong.join() === "0.200:1,0.500:0,0.700:0", `wrong calls ${wrong}`);
  // The study's dice row: 7 levels (– for the level neither mask has) and its mean over the 6 measured.
  assert(html.includes(`<td class="num">–</td>`), "unmeasured level");
  assert(html.includes(`<td class="num">${(3.9 / 6).toFixed(3)}</td></tr>`), "the study's mean dice");
  const plain = indexHtml([{ uid: "x", ok: true, probabilities: [0, 0, 0, 0, 0, 0, 0, 0] }]);
  assert(!plain.includes("Score") && !plain.includes("Segmentation dice"), "no truth, no score or dice");
});

Deno.test("report renders in headless Chromium (skipped without /usr/bin/chromium)", async () => {
  const chromium = "/usr/bin/chromium";
  if (!(await Deno.stat(chromium).then(() => true, () => false))) return;
  const dir = await Deno.makeTempDir({ prefix: "report_test_" });
  try {
    await Deno.writeTextFile(`${dir}/report.html`, await studyReportHtml(syntheticStudy()));
    const shot = `${dir}/report.png`;
    const o = await new Deno.Command(chromium, {
      args: [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        `--screenshot=${shot}`,
        "--window-size=1200,1600",
        `file://${dir}/report.html`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(o.success, `chromium failed: ${new TextDecoder().decode(o.stderr)}`);
    const [d] = await decodeInPython([{ stats: b64(await Deno.readFile(shot)) }]);
    assert(!d.error && d.width === 1200 && d.height === 1600, `screenshot ${d.width}x${d.height} ${d.error}`);
    // Not a blank page: the coloured overlay and bars must be somewhere on the screen.
    assert(d.coloured > 1000, `only ${d.coloured} coloured pixels in the screenshot`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

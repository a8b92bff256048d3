/**
 * @file Self-contained HTML report pages of the inference pipeline: one page per study (the uid, timings, a
 * sagittal and a coronal view through the spine with the predicted vertebra labels overlaid, each vertebra's
 * classifier crop, the 8 probabilities as bars) and an index page over all studies. Images are PNG data: URIs
 * and styles are inline, so a page can be opened, mailed or archived on its own; a Content-Security-Policy
 * meta tag makes the browser refuse anything else.
 */
import type { StudyMeta } from "./meta.ts";
import { pngDataUri } from "./png.ts";
import { differenceText, type PairedInterval } from "./bootstrap.ts";

/** Names of the 8 outputs, in the order of `StudyReport.probabilities`. */
export const OUTPUT_NAMES = ["patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7"] as const;

/** What the report (and the browser page) says for a vertebra the segmentor did not find. */
export const NOT_FOUND = "not found";

/** Overlay colour [r, g, b] of labels 1..7 (C1..C7); index 0 (background) is unused. */
export const LABEL_COLORS: readonly (readonly [number, number, number])[] = [
  [0, 0, 0],
  [230, 25, 75], // C1 red
  [60, 180, 75], // C2 green
  [255, 225, 25], // C3 yellow
  [0, 130, 200], // C4 blue
  [245, 130, 48], // C5 orange
  [145, 30, 180], // C6 purple
  [70, 240, 240], // C7 cyan
];

/** Opacity of the label colours over the CT. */
export const OVERLAY_ALPHA = 0.45;

/** Bone window (HU) used when the stored values can be rescaled to HU. */
export const BONE_WINDOW = { level: 400, width: 1800 } as const;

/** Percentiles of the stored values that bound the display window when there is no rescale to HU. */
export const PERCENTILE_WINDOW = [1, 99.5] as const;

/** One vertebra's classifier crop. */
export interface ReportCrop {
  /** 1..7 (C1..C7). */
  vertebra: number;
  /** [3, D, S, S]: channel 0 the z-scored image, channel 2 the label mask; null when no crop was taken. */
  crop: Float32Array | null;
  /** Shape of `crop` ([3, D, S, S]); ignored when `crop` is null. */
  shape?: readonly number[] | null;
  /**
   * The picture the report shows of the crop ({@link cropSlice} of it), computed already: then `crop` may be
   * null (a few KiB to hand to a Worker in place of 31 MB).
   */
  view?: CropView | null;
}

/** The middle slice of a crop's image channel as gray pixels (what {@link cropSlice} gives). */
export interface CropView {
  gray: Uint8Array;
  size: number;
  /** 0-based slice shown, of `depth`. */
  slice: number;
  depth: number;
}

/** Everything a study's report page shows. */
export interface StudyReport {
  /** StudyInstanceUID (escaped on the page). */
  uid: string;
  /** The 256-grid cube: stored values [Z, H, W] (H = W = 256 in the pipeline), slice 0 most cranial. */
  image: {
    data: Int16Array | Uint16Array;
    shape: readonly [number, number, number];
    /** DICOM RescaleSlope / RescaleIntercept: given either, the views use the bone window in HU. */
    slope?: number;
    intercept?: number;
    /** Voxel size [z, y, x] in mm of this cube; only used to draw the views with the right aspect ratio. */
    spacing?: readonly [number, number, number];
  };
  /** Predicted labels (0 background, 1..7 = C1..C7) on the [::2] grid: [ceil(Z/2), H, W] (or [Z, H, W]). */
  labels: { data: Uint8Array; shape: readonly [number, number, number] };
  /** Boxes and voxel counts of the predicted labels (infer/meta.ts). */
  meta: StudyMeta;
  /** Classifier crops, any order; a vertebra without an entry or with `crop: null` shows "not found". */
  crops: ReportCrop[];
  /** 8 probabilities in [0, 1]: patient_overall, C1..C7. */
  probabilities: readonly number[];
  /** Ground truth of the same 8 outputs (0/1), when known. */
  truth?: readonly number[] | null;
  /** Stage durations in milliseconds, shown in insertion order. */
  timings: Record<string, number>;
}

/** One row of the index page. */
export interface IndexEntry {
  uid: string;
  /** The 8 probabilities (patient_overall, C1..C7); may be null for a failed study. */
  probabilities: readonly number[] | null;
  ok: boolean;
  /** Why the study failed. */
  error?: string;
  /** Relative link to the study's page; defaults to `<uid>/report.html`. */
  reportPath?: string;
  /** Ground truth of the same 8 outputs (0/1), when a truth file was given. */
  truth?: readonly number[] | null;
  /** Per-level dice C1..C7 (null: level in neither mask) against the study's ground-truth mask, if any. */
  dice?: readonly (number | null)[] | null;
}

/** What the index page says about the whole run when a truth file was given (infer/evaluate.ts). */
export interface IndexSummary {
  score: { score: number; studies: number };
  /** The best constant prediction: its score and where its probabilities come from. */
  constant: { score: number; source: string };
  ratio: number;
  /** score - constant score with its bootstrap interval over the studies. */
  difference: PairedInterval;
  /** Mean per-level dice over the studies with a ground-truth mask; null when none had one. */
  dice: { perLevel: readonly (number | null)[]; mean: number | null; studies: number } | null;
}

/** A rendered view: RGB pixels, row-major [height, width, 3]. */
export interface ViewImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** The two views through the spine and how they were made. */
export interface SpineViews {
  /** Rows z (cranial at the top), columns y (anterior on the left), at x = `x`. */
  sagittal: ViewImage;
  /** Rows z, columns x, at y = `y`. */
  coronal: ViewImage;
  /** The planes: the rounded centre of the C1..C7 voxels (the middle of the cube when there are none). */
  x: number;
  y: number;
  /** Stored values mapped to gray 0 and 255. */
  window: [number, number];
  /** How the window was chosen. */
  windowKind: "bone HU" | "percentile";
}

/** HTML text/attribute escape. */
export function escapeHtml(s: string): string {
  return String(s).replace(
    /[&<>"']/g,
    (c) => c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : c === '"' ? "&quot;" : "&#39;",
  );
}

function checkShape3(shape: unknown, where: string): [number, number, number] {
  if (
    !Array.isArray(shape) || shape.length !== 3 ||
    shape.some((d) => !Number.isInteger(d) || d < 1)
  ) {
    throw new Error(`${where}: shape must be [Z, H, W] of positive integers, got [${shape}]`);
  }
  return shape as [number, number, number];
}

/** Validates the volumes; returns the image shape and the z step of the labels (2 for the [::2] grid). */
function checkVolumes(r: Pick<StudyReport, "uid" | "image" | "labels">): {
  shape: [number, number, number];
  zStep: number;
} {
  const where = `report(${r.uid})`;
  if (!r.image || !(r.image.data instanceof Int16Array || r.image.data instanceof Uint16Array)) {
    throw new Error(`${where}: image.data must be an Int16Array or Uint16Array`);
  }
  const [Z, H, W] = checkShape3(r.image.shape, `${where}: image`);
  if (r.image.data.length !== Z * H * W) {
    throw new Error(
      `${where}: image has ${r.image.data.length} values, shape [${r.image.shape}] needs ${Z * H * W}`,
    );
  }
  if (!r.labels || !(r.labels.data instanceof Uint8Array)) {
    throw new Error(`${where}: labels.data must be a Uint8Array`);
  }
  const [Zl, Hl, Wl] = checkShape3(r.labels.shape, `${where}: labels`);
  if (Hl !== H || Wl !== W || (Zl !== Math.ceil(Z / 2) && Zl !== Z)) {
    throw new Error(
      `${where}: labels shape [${r.labels.shape}] must be [ceil(Z/2), H, W] = [${
        Math.ceil(Z / 2)
      }, ${H}, ${W}]` +
        ` (the [::2] grid of image [${r.image.shape}])`,
    );
  }
  if (r.labels.data.length !== Zl * H * W) {
    throw new Error(
      `${where}: labels have ${r.labels.data.length} values, shape [${r.labels.shape}] needs ${Zl * H * W}`,
    );
  }
  return { shape: [Z, H, W], zStep: Zl === Z ? 1 : 2 };
}

/** The p-th percentile (0..100, nearest rank on the sorted sample) of every `stride`-th value. */
function percentiles(data: ArrayLike<number>, ps: readonly number[], stride = 1): number[] {
  const n = Math.ceil(data.length / stride);
  const s = new Float64Array(n);
  for (let i = 0, k = 0; k < n; i += stride, k++) s[k] = data[i];
  s.sort();
  return ps.map((p) => s[Math.min(n - 1, Math.max(0, Math.round((p / 100) * (n - 1))))]);
}

/**
 * Renders the sagittal and coronal views through the centre of the predicted C1..C7 voxels: the CT in the
 * bone window (level 400 / width 1800 HU) when slope or intercept is given, else between the 1st and 99.5th
 * percentile of the stored values, each label blended over it with `OVERLAY_ALPHA`. The image is shown at
 * every slice; label slice k covers image slices 2k and 2k + 1.
 */
export function spineViews(r: Pick<StudyReport, "uid" | "image" | "labels">): SpineViews {
  const { shape: [Z, H, W], zStep } = checkVolumes(r);
  const img = r.image.data, lab = r.labels.data;
  let sx = 0, sy = 0, n = 0;
  for (let i = 0; i < lab.length; i++) {
    const v = lab[i];
    if (v >= 1 && v <= 7) {
      const p = i % (H * W);
      sx += p % W;
      sy += Math.floor(p / W);
      n++;
    }
  }
  const x = n ? Math.round(sx / n) : W >> 1;
  const y = n ? Math.round(sy / n) : H >> 1;

  let lo: number, hi: number, windowKind: SpineViews["windowKind"];
  if (r.image.slope !== undefined || r.image.intercept !== undefined) {
    const slope = r.image.slope ?? 1, intercept = r.image.intercept ?? 0;
    if (!Number.isFinite(slope) || slope === 0 || !Number.isFinite(intercept)) {
      throw new Error(
        `report(${r.uid}): image slope ${slope} / intercept ${intercept} must be finite, slope non-zero`,
      );
    }
    const huLo = BONE_WINDOW.level - BONE_WINDOW.width / 2, huHi = BONE_WINDOW.level + BONE_WINDOW.width / 2;
    [lo, hi] = [(huLo - intercept) / slope, (huHi - intercept) / slope];
    if (lo > hi) [lo, hi] = [hi, lo];
    windowKind = "bone HU";
  } else {
    // About 200k samples keep the sort cheap on a large cube.
    [lo, hi] = percentiles(img, PERCENTILE_WINDOW, Math.max(1, Math.floor(img.length / 200_000)));
    windowKind = "percentile";
  }
  const span = hi > lo ? hi - lo : 1;
  const a = OVERLAY_ALPHA;
  const put = (out: Uint8Array, o: number, value: number, label: number) => {
    const g = 255 * Math.min(1, Math.max(0, (value - lo) / span));
    if (label >= 1 && label <= 7) {
      const c = LABEL_COLORS[label];
      out[o] = Math.round(g * (1 - a) + c[0] * a);
      out[o + 1] = Math.round(g * (1 - a) + c[1] * a);
      out[o + 2] = Math.round(g * (1 - a) + c[2] * a);
    } else {
      out[o] = out[o + 1] = out[o + 2] = Math.round(g);
    }
  };
  const sag = new Uint8Array(Z * H * 3), cor = new Uint8Array(Z * W * 3);
  for (let z = 0; z < Z; z++) {
    const zi = z * H * W, zl = Math.floor(z / zStep) * H * W;
    for (let j = 0; j < H; j++) put(sag, (z * H + j) * 3, img[zi + j * W + x], lab[zl + j * W + x]);
    for (let i = 0; i < W; i++) put(cor, (z * W + i) * 3, img[zi + y * W + i], lab[zl + y * W + i]);
  }
  return {
    sagittal: { rgb: sag, width: H, height: Z },
    coronal: { rgb: cor, width: W, height: Z },
    x,
    y,
    window: [lo, hi],
    windowKind,
  };
}

/**
 * The middle slice of channel 0 of a crop [3, D, S, S] as gray pixels [S, S]: the middle of the slices before
 * the zero padding at the end, windowed between the slice's 1st and 99th percentile.
 */
export function cropSlice(crop: Float32Array, shape: readonly number[], where = "crop"): CropView {
  if (
    !Array.isArray(shape) || shape.length !== 4 || shape[0] !== 3 ||
    shape.some((d) => !Number.isInteger(d) || d < 1) || shape[2] !== shape[3]
  ) {
    throw new Error(`${where}: shape must be [3, D, S, S], got [${shape}]`);
  }
  const [, D, S] = shape;
  if (!(crop instanceof Float32Array) || crop.length !== 3 * D * S * S) {
    throw new Error(`${where}: crop must be a Float32Array of ${3 * D * S * S} values (shape [${shape}])`);
  }
  const plane = S * S;
  let used = 0;
  for (let d = D - 1; d >= 0 && !used; d--) {
    for (let c = 0; c < 3 && !used; c++) {
      const o = (c * D + d) * plane;
      for (let i = 0; i < plane; i++) {
        if (crop[o + i] !== 0) {
          used = d + 1;
          break;
        }
      }
    }
  }
  const slice = Math.floor((Math.max(used, 1) - 1) / 2);
  const src = crop.subarray(slice * plane, (slice + 1) * plane);
  const [lo, hi] = percentiles(src, [1, 99]);
  const span = hi > lo ? hi - lo : 1;
  const gray = new Uint8Array(plane);
  for (let i = 0; i < plane; i++) gray[i] = Math.round(255 * Math.min(1, Math.max(0, (src[i] - lo) / span)));
  return { gray, size: S, slice, depth: D };
}

function checkProbs(p: unknown, where: string, allowNull = false): number[] | null {
  if (p === null || p === undefined) {
    if (allowNull) return null;
    throw new Error(`${where}: missing`);
  }
  if (!Array.isArray(p) || p.length !== 8 || p.some((v) => typeof v !== "number" || !(v >= 0 && v <= 1))) {
    throw new Error(`${where}: must be 8 numbers in [0, 1] (patient_overall, C1..C7), got [${p}]`);
  }
  return p;
}

function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  return ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

const CSP = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; ` +
  `style-src 'unsafe-inline'">`;

const STYLE = `<style>
body { font: 14px/1.4 system-ui, sans-serif; color: #222; margin: 24px; max-width: 1150px; }
h1 { font-size: 20px; word-break: break-all; margin: 0 0 8px; }
h2 { font-size: 16px; margin: 24px 0 8px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; }
td, th { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.views { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; }
.views img { background: #000; display: block; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; margin: 10px 0; font-size: 13px; }
.sw { display: inline-block; width: 14px; height: 14px; vertical-align: -2px; margin-right: 4px; border: 1px solid #777; }
.crops { display: grid; grid-template-columns: repeat(auto-fill, 170px); gap: 14px; }
.crops img { width: 160px; height: 160px; display: block; background: #000; }
.missing { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center;
  background: #eee; color: #888; }
.fail { color: #b00020; }
td.wrong { outline: 2px solid #b00020; outline-offset: -2px; font-weight: bold; }
.small { font-size: 12px; color: #666; }
</style>`;

function page(title: string, body: string): string {
  return `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n${CSP}\n` +
    `<title>${escapeHtml(title)}</title>\n${STYLE}\n</head>\n<body>\n${body}\n</body>\n</html>\n`;
}

function barsSvg(probs: readonly number[], truth: readonly number[] | null): string {
  const labelW = 130, barW = 360, rowH = 26, top = 8;
  const width = labelW + barW + 150, height = top + rowH * 8 + 22;
  const parts: string[] = [];
  parts.push(
    `<svg width="${width}" height="${height}" role="img" ` +
      `aria-label="predicted probabilities">`,
  );
  for (let k = 0; k < 8; k++) {
    const yy = top + k * rowH, p = probs[k];
    const t = truth ? truth[k] : null;
    // With a ground truth, colour says whether the 0.5 threshold agrees with it.
    const fill = t === null ? "#4a7ab5" : (p >= 0.5) === (t >= 0.5) ? "#3c9a5a" : "#c8453c";
    parts.push(
      `<text x="${labelW - 8}" y="${yy + 17}" text-anchor="end" font-size="13">${OUTPUT_NAMES[k]}</text>`,
      `<rect class="track" x="${labelW}" y="${yy + 4}" width="${barW}" height="${rowH - 8}" fill="#eee"/>`,
      `<rect class="bar" x="${labelW}" y="${yy + 4}" width="${(p * barW).toFixed(1)}" height="${rowH - 8}" ` +
        `fill="${fill}"><title>${OUTPUT_NAMES[k]}: ${p.toFixed(4)}</title></rect>`,
      `<text x="${labelW + barW + 8}" y="${yy + 17}" font-size="13">${p.toFixed(3)}${
        t === null ? "" : ` (truth ${t})`
      }</text>`,
    );
    if (t !== null) {
      const tx = (labelW + t * barW).toFixed(1);
      parts.push(
        `<line class="truth" x1="${tx}" x2="${tx}" y1="${yy + 1}" y2="${yy + rowH - 1}" stroke="#000" ` +
          `stroke-width="3"><title>truth ${t}</title></line>`,
      );
    }
  }
  const ay = top + rowH * 8 + 14;
  for (const v of [0, 0.5, 1]) {
    parts.push(
      `<text x="${labelW + v * barW}" y="${ay}" font-size="11" fill="#666" text-anchor="middle">${v}</text>`,
    );
  }
  const half = labelW + barW / 2;
  parts.push(
    `<line x1="${half}" x2="${half}" y1="${top}" y2="${
      top + rowH * 8
    }" stroke="#999" stroke-dasharray="3 3"/>`,
    `</svg>`,
  );
  return parts.join("\n");
}

/**
 * The report page of one study as a self-contained HTML document (no scripts, no remote resources): uid and
 * timings, sagittal and coronal views with the predicted labels, each vertebra's crop or "not found", and the
 * 8 probabilities as bars with the ground truth marked when given. Bad input throws naming the field.
 */
export async function studyReportHtml(r: StudyReport): Promise<string> {
  const { where, probs, truth } = checkReport(r);
  const [Z, H, W] = r.image.shape;
  const out: string[] = [];
  out.push(`<h1>Study ${escapeHtml(r.uid)}</h1>`);
  out.push(
    `<p class="small">Image cube [${Z}, ${H}, ${W}]; labels [${r.labels.shape.join(", ")}]` +
      ` (${r.labels.shape[0] === Z ? "every slice" : "every 2nd slice"}).</p>`,
  );
  out.push(timingsSection(r.timings));
  out.push(await viewsSection(r));
  out.push(await cropsSection(r, where));
  out.push(`<h2>Fracture probabilities</h2>`);
  out.push(barsSvg(probs, truth));
  if (truth) {
    out.push(
      `<p class="small">Black line: ground truth. Green bar: agrees with it at the 0.5 threshold, red: disagrees.</p>`,
    );
  }
  return page(`Report ${r.uid}`, out.join("\n"));
}

/** Checks the fields every section relies on; throws naming the study and the field. */
function checkReport(r: StudyReport): { where: string; probs: number[]; truth: number[] | null } {
  if (typeof r?.uid !== "string" || r.uid === "") {
    throw new Error("studyReportHtml: uid must be a non-empty string");
  }
  const where = `studyReportHtml(${r.uid})`;
  const probs = checkProbs(r.probabilities, `${where}: probabilities`)!;
  const truth = checkProbs(r.truth, `${where}: truth`, true);
  if (!r.meta || !Array.isArray(r.meta.sums) || typeof r.meta.boxes !== "object") {
    throw new Error(`${where}: meta must be a StudyMeta with sums and boxes`);
  }
  if (!Array.isArray(r.crops)) throw new Error(`${where}: crops must be an array`);
  for (const c of r.crops) {
    if (!(Number.isInteger(c?.vertebra) && c.vertebra >= 1 && c.vertebra <= 7)) {
      throw new Error(`${where}: crop vertebra must be 1..7, got ${c?.vertebra}`);
    }
  }
  const sp = r.image.spacing;
  if (sp !== undefined && (!Array.isArray(sp) || sp.length !== 3 || sp.some((v) => !(v > 0)))) {
    throw new Error(`${where}: image.spacing must be 3 positive numbers [z, y, x] mm, got [${sp}]`);
  }
  return { where, probs, truth };
}

function timingsSection(timings: StudyReport["timings"]): string {
  const entries = Object.entries(timings ?? {});
  if (!entries.length) return `<h2>Timings</h2>\n<p class="small">none recorded</p>`;
  const rows = entries.map(([k, v]) =>
    `<tr><td>${escapeHtml(k)}</td><td class="num">${escapeHtml(formatMs(Number(v)))}</td></tr>`
  );
  return [`<h2>Timings</h2>`, `<table>`, ...rows, `</table>`].join("\n");
}

/** Sagittal and coronal views with the predicted labels, drawn at the voxels' aspect, and the legend. */
async function viewsSection(r: StudyReport): Promise<string> {
  const views = spineViews(r);
  const sp = r.image.spacing;
  const viewW = 400;
  const viewFig = async (v: ViewImage, caption: string, colSpacing: number | undefined) => {
    const scale = viewW / v.width;
    const aspect = sp && colSpacing ? sp[0] / colSpacing : 1;
    const h = Math.max(1, Math.round(v.height * scale * aspect));
    const uri = await pngDataUri(v.rgb, v.width, v.height, 3);
    return `<figure><img src="${uri}" width="${viewW}" height="${h}" style="width:${viewW}px;height:${h}px" ` +
      `alt="${escapeHtml(caption)}"><figcaption>${escapeHtml(caption)}</figcaption></figure>`;
  };
  const win =
    `${
      views.windowKind === "bone HU" ? `bone window L${BONE_WINDOW.level}/W${BONE_WINDOW.width} HU` : "window"
    }` +
    ` = stored ${Math.round(views.window[0])}..${Math.round(views.window[1])}`;
  const out: string[] = [];
  out.push(`<h2>Predicted vertebrae</h2>`);
  out.push(`<div class="views">`);
  out.push(await viewFig(views.sagittal, `Sagittal, x = ${views.x} (anterior left)`, sp?.[1]));
  out.push(await viewFig(views.coronal, `Coronal, y = ${views.y} (patient right on the left)`, sp?.[2]));
  out.push(`</div>`);
  out.push(
    `<p class="small">Cranial at the top; ${escapeHtml(win)}; planes through the centre of the predicted ` +
      `C1–C7 voxels.</p>`,
  );
  out.push(`<div class="legend">`);
  for (let v = 1; v <= 7; v++) {
    const [cr, cg, cb] = LABEL_COLORS[v];
    out.push(`<span><span class="sw" style="background:rgb(${cr},${cg},${cb})"></span>C${v}</span>`);
  }
  out.push(`</div>`);
  return out.join("\n");
}

/** Each vertebra's crop (its middle slice) with its voxel count, or why there is none. */
async function cropsSection(r: StudyReport, where: string): Promise<string> {
  const out: string[] = [];
  out.push(`<h2>Classifier crops</h2>`);
  out.push(
    `<p class="small">Middle slice of each crop's image channel; voxel counts on the [::2] x 256 x 256 grid.</p>`,
  );
  out.push(`<div class="crops">`);
  for (let v = 1; v <= 7; v++) {
    const entries = r.crops.filter((c) => c?.vertebra === v);
    if (entries.length > 1) {
      throw new Error(`${where}: crops has ${entries.length} entries for vertebra ${v}`);
    }
    const c = entries[0];
    const box = r.meta.boxes[String(v)];
    const count = r.meta.sums[v] ?? 0;
    if (!c || ((c.crop === null || c.crop === undefined) && !c.view)) {
      const note = box ? `${count.toLocaleString("en-US")} voxels, no crop` : NOT_FOUND;
      out.push(
        `<figure><div class="missing">${box ? "no crop" : NOT_FOUND}</div><figcaption><b>C${v}</b>: ` +
          `${note}</figcaption></figure>`,
      );
      continue;
    }
    const s = c.view ?? cropSlice(c.crop!, c.shape ?? [], `${where}: crop of C${v}`);
    const uri = await pngDataUri(s.gray, s.size, s.size, 1);
    const zr = box ? `, label slices ${box[0][0]}–${box[0][3] - 1}` : "";
    out.push(
      `<figure><img src="${uri}" alt="C${v} crop"><figcaption><b>C${v}</b>: ` +
        `${count.toLocaleString("en-US")} voxels${zr}<br><span class="small">slice ${
          s.slice + 1
        } of ${s.depth}, ` +
        `${s.size}×${s.size}</span></figcaption></figure>`,
    );
  }
  out.push(`</div>`);
  return out.join("\n");
}

/** The score beside the best constant prediction, and how to read it. */
function scoreSection(e: IndexSummary): string {
  const d = differenceText(e.difference);
  return `<h2>Score</h2>\n<p>Competition score <b>${e.score.score.toFixed(4)}</b> over ${e.score.studies} ` +
    `studies vs <b>${e.constant.score.toFixed(4)}</b> for the best constant prediction (ratio ` +
    `${e.ratio.toFixed(2)}; lower is better; ${
      e.difference.high < 0 ? d : `<span class="fail">${escapeHtml(d)}</span>`
    }).</p>\n<p class="small">Baseline: ` +
    `${escapeHtml(e.constant.source)}.</p>`;
}

/** The 8 probability cells of a row; with the truth, each shows it and a wrong call at 0.5 is outlined. */
function probCells(probs: number[], truth: number[] | null): string {
  return probs.map((p, j) => {
    // A tint that grows with the probability makes positives stand out in a long table.
    const bg = `background:rgba(200,69,60,${(0.08 + 0.5 * p).toFixed(2)})`;
    if (!truth) return `<td class="num" style="${bg}">${p.toFixed(3)}</td>`;
    const wrong = (p >= 0.5) !== (truth[j] >= 0.5);
    return `<td class="num${wrong ? " wrong" : ""}" style="${bg}" title="truth ${truth[j]}${
      wrong ? ", wrong at 0.5" : ""
    }">${p.toFixed(3)} <span class="small">(${truth[j]})</span></td>`;
  }).join("");
}

function diceCell(d: number | null): string {
  return `<td class="num">${d === null ? "–" : d.toFixed(3)}</td>`;
}

/** Per study its per-level dice against its ground-truth mask, and the mean over studies. */
function diceSection(studies: IndexEntry[], e: IndexSummary | undefined): string {
  const levels = [1, 2, 3, 4, 5, 6, 7].map((v) => `<th>C${v}</th>`).join("");
  const out = [
    `<h2>Segmentation dice</h2>`,
    `<p class="small">Predicted vertebrae (vertebrae.nii.gz) against each study's ground-truth mask on the ` +
    `study's grid, labels above 7 as background; – where neither mask has the level.</p>`,
    `<table>\n<tr><th>Study</th>${levels}<th>mean</th></tr>`,
  ];
  for (const s of studies.filter((s) => s.ok)) {
    const d = s.dice;
    if (!d) {
      out.push(
        `<tr><td>${escapeHtml(s.uid)}</td><td colspan="8" class="small">no ground-truth mask</td></tr>`,
      );
      continue;
    }
    const m = d.filter((v): v is number => v !== null);
    const mean = m.length ? m.reduce((a, b) => a + b, 0) / m.length : null;
    out.push(`<tr><td>${escapeHtml(s.uid)}</td>${d.map(diceCell).join("")}${diceCell(mean)}</tr>`);
  }
  if (e?.dice) {
    out.push(
      `<tr><th>mean over ${e.dice.studies} stud${e.dice.studies === 1 ? "y" : "ies"}</th>${
        e.dice.perLevel.map(diceCell).join("")
      }${diceCell(e.dice.mean)}</tr>`,
    );
  }
  out.push(`</table>`);
  return out.join("\n");
}

/**
 * The index page over all studies: with `summary` (a truth file was given) the competition score beside the
 * best constant prediction; one row per study with a relative link to its page (`<uid>/report.html` unless
 * `reportPath` says otherwise), its 8 probabilities (against the truth when given, a wrong call at 0.5
 * outlined) and for failures the reason; then, when some study has a ground-truth mask, the per-level dice.
 */
export function indexHtml(studies: IndexEntry[], summary?: IndexSummary): string {
  if (!Array.isArray(studies)) throw new Error("indexHtml: studies must be an array");
  const failed = studies.filter((s) => !s?.ok).length;
  const out: string[] = [];
  out.push(`<h1>C-spine fracture predictions</h1>`);
  out.push(
    `<p>${studies.length} studies: ${studies.length - failed} reported, ` +
      `<span class="${failed ? "fail" : ""}">${failed} failed</span>.</p>`,
  );
  if (summary) out.push(scoreSection(summary));
  const withTruth = studies.some((s) => s?.truth);
  if (withTruth) {
    out.push(`<p class="small">Each cell: predicted probability (true label); outlined: wrong at 0.5.</p>`);
  }
  out.push(
    `<table>\n<tr><th>#</th><th>Study</th><th>Status</th>${
      OUTPUT_NAMES.map((n) => `<th>${n}</th>`).join("")
    }</tr>`,
  );
  studies.forEach((s, i) => out.push(...indexRow(s, i)));
  out.push(`</table>`);
  if (studies.some((s) => s?.ok && s.dice)) out.push(diceSection(studies, summary));
  return page("C-spine fracture predictions", out.join("\n"));
}

/** One study's row(s) of the index table, checked. */
function indexRow(s: IndexEntry, i: number): string[] {
  if (typeof s?.uid !== "string" || s.uid === "") {
    throw new Error(`indexHtml: studies[${i}].uid must be a non-empty string`);
  }
  const probs = checkProbs(s.probabilities, `indexHtml: studies[${i}] (${s.uid}) probabilities`, !s.ok);
  const truth = checkProbs(s.truth, `indexHtml: studies[${i}] (${s.uid}) truth`, true);
  let link: string | null = null;
  if (s.ok) {
    const path = s.reportPath ?? `${encodeURIComponent(s.uid)}/report.html`;
    // Index and reports travel together: only relative links.
    if (/^[a-z][a-z0-9+.-]*:|^[/\\]/i.test(path)) {
      throw new Error(`indexHtml: studies[${i}] (${s.uid}) reportPath must be relative, got "${path}"`);
    }
    link = path;
  }
  const name = link ? `<a href="${escapeHtml(link)}">${escapeHtml(s.uid)}</a>` : escapeHtml(s.uid);
  const status = s.ok ? "ok" : `<span class="fail">failed</span>`;
  const cells = probs ? probCells(probs, truth) : `<td colspan="8"></td>`;
  const rows = [`<tr><td class="num">${i + 1}</td><td>${name}</td><td>${status}</td>${cells}</tr>`];
  if (!s.ok) {
    rows.push(
      `<tr><td></td><td colspan="10" class="fail">reason: ${
        escapeHtml(s.error ?? "unknown error")
      }</td></tr>`,
    );
  }
  return rows;
}

/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * @file The browser page of `deno task serve`: the engine and the per-study pipeline of `deno task infer`
 * (the same TypeScript, bundled for the browser) on a dropped DICOM folder or a generated phantom. Nothing
 * leaves the machine: files are read in the page and the models run on the browser's WebGPU adapter.
 *
 * For tests the page exposes `globalThis.csn`: its state ("starting", "ready", "running", "done", "error"),
 * the last result, the checks of web/checks.ts run on the page's device, and the page's DICOM reader.
 */
import { type Device, openDevice } from "../mod.ts";
import { checkpointFromBytes } from "../io/checkpoint.ts";
import { seriesFromFiles } from "../data/dicom.ts";
import { writeCtSlice } from "../data/dicom_write.ts";
import { phantomStudy } from "../data/synth.ts";
import { studyFromSeries } from "../infer/study.ts";
import { modelFromCheckpoint } from "../infer/load.ts";
import type { Member } from "../infer/ensemble.ts";
import { INFER_DEFAULTS, predictStudy } from "../infer/pipeline.ts";
import { submissionCsv } from "../infer/score.ts";
import { labelsToNifti } from "../infer/nifti_out.ts";
import { encodeNifti } from "../data/nifti.ts";
import { csnForward, opsSuite } from "./checks.ts";
import { probabilityRows } from "./rows.ts";

/** What the server says about the weights it serves (`/weights.json`). */
export interface WeightsIndex {
  files: { name: string; url: string }[];
  /** Why there are none (e.g. how to get some), shown on the page. */
  hint?: string;
}

/** One finished study, as the page shows it. */
export interface PageResult {
  uid: string;
  /** patient_overall, C1..C7 (the order of predictions.jsonl). */
  probabilities: number[];
  /** What the table shows for each: the probability, or "not found" for a vertebra without voxels. */
  rows: string[];
  /** Seconds per step. */
  timings: Record<string, number>;
  /** Seconds from the first file read to the probabilities. */
  seconds: number;
}

const LOOSE = "dropped files";
const COLORS = [
  [0, 0, 0],
  [230, 25, 75],
  [60, 180, 75],
  [255, 225, 25],
  [0, 130, 200],
  [245, 130, 48],
  [145, 30, 180],
  [70, 240, 240],
];

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const state = {
  state: "starting" as "starting" | "ready" | "running" | "done" | "error",
  error: "",
  result: null as PageResult | null,
  device: null as Device | null,
  models: null as { seg: Member[]; cls: Member[] } | null,
  /** The web/checks.ts computations on this page's device. */
  opsSuite: (seed?: number) => opsSuite(state.device!, seed),
  csnForward: (seed?: number) => csnForward(state.device!, seed),
  /** The page's DICOM reader on files given as byte arrays: the series' syntax, shape and stored values. */
  readSeries: async (files: { name: string; bytes: number[] }[]) => {
    const s = await seriesFromFiles(
      files.map((f) => ({ name: f.name, bytes: new Uint8Array(f.bytes) })),
      "test",
    );
    return { transferSyntax: s.transferSyntax, shape: s.shape, pixels: [...s.pixels] };
  },
};
(globalThis as unknown as { csn: typeof state }).csn = state;

function showError(msg: string) {
  state.state = "error";
  state.error = msg;
  const el = $("error");
  el.textContent = msg;
  el.hidden = false;
}

function step(name: string, status: "run" | "ok", seconds?: number) {
  const list = $("steps");
  let li = list.querySelector(`[data-step="${name}"]`) as HTMLLIElement | null;
  if (!li) {
    li = document.createElement("li");
    li.dataset.step = name;
    list.append(li);
  }
  li.className = status;
  li.textContent = status === "ok" ? `${name}: ${seconds!.toFixed(2)} s` : `${name}...`;
}

/** The next frame, so that the progress just written is painted before a long step. */
const paint = () => new Promise((r) => setTimeout(r, 0));

async function start() {
  if (!("gpu" in navigator)) {
    showError(
      "This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome/Chromium or Edge " +
        "(Firefox Nightly, Safari Technology Preview), over http://127.0.0.1 or https.",
    );
    return;
  }
  try {
    // Chromium needs `enable subgroups;` in WGSL that Deno does not: the kernels' subgroup paths stay off.
    state.device = await openDevice({ subgroups: false });
  } catch (e) {
    showError(`No WebGPU device: ${(e as Error).message}`);
    return;
  }
  const i = state.device.info;
  $("adapter").textContent = `${i.description || i.vendor || "adapter"} (${i.architecture || "?"})` +
    `${i.isFallbackAdapter ? ", fallback (software)" : ""}; ${i.maxComputeInvocationsPerWorkgroup} ` +
    `invocations/workgroup, ${i.maxStorageBuffersPerShaderStage} storage buffers/stage, ` +
    `${(i.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB/binding; features: ${
      i.features.join(", ") || "none"
    }`;
  try {
    state.models = await loadWeights(state.device);
  } catch (e) {
    showError((e as Error).message);
    return;
  }
  state.state = "ready";
  for (const id of ["phantom", "folder", "files"]) ($(id) as HTMLInputElement).disabled = false;
}

async function loadWeights(device: Device): Promise<{ seg: Member[]; cls: Member[] } | null> {
  const index = await (await fetch("weights.json")).json() as WeightsIndex;
  if (!index.files.length) {
    $("weights").textContent = index.hint ?? "The server has no weights.";
    return null;
  }
  const seg: Member[] = [], cls: Member[] = [];
  for (const f of index.files) {
    $("weights").textContent = `loading ${f.name}...`;
    const res = await fetch(f.url);
    if (!res.ok) throw new Error(`${f.name}: HTTP ${res.status} from the server`);
    const { tensors, meta } = checkpointFromBytes(new Uint8Array(await res.arrayBuffer()), f.name);
    const m = modelFromCheckpoint(tensors, meta, f.name, device);
    (m.config.model === "CSNUNet" ? seg : cls).push(m);
  }
  if (!seg.length || !cls.length) {
    throw new Error(
      `The served weights (${index.files.map((f) => f.name).join(", ")}) need a segmentor (CSNUNet) and ` +
        `a classifier (CSNClassifier or PlainClassifier)`,
    );
  }
  $("weights").textContent = `models: ${
    [...seg, ...cls].map((m) =>
      `${m.path} (${m.config.model} ${m.config.encoder}${m.calibration ? ", calibrated" : ""})`
    ).join(", ")
  }`;
  return { seg, cls };
}

/** Files of a dropped folder (recursively) through the File System entries API. */
async function entryFiles(entry: FileSystemEntry, prefix = ""): Promise<File[]> {
  if (entry.isFile) {
    return [await new Promise<File>((ok, bad) => (entry as FileSystemFileEntry).file(ok, bad))];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const out: File[] = [];
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((ok, bad) => reader.readEntries(ok, bad));
    if (!batch.length) break;
    for (const e of batch) out.push(...await entryFiles(e, `${prefix}${entry.name}/`));
  }
  return out;
}

/** The phantom study of data/synth.ts as DICOM files in memory (int16 HU, native little endian). */
function phantomFiles(seed: number): { name: string; bytes: Uint8Array }[] {
  const st = phantomStudy(seed, 128);
  const [Z, Y, X] = st.shape;
  const studyUid = `1.2.826.0.1.3680043.10.1378.999.${seed}`, seriesUid = `${studyUid}.1`;
  const files = [];
  for (let z = 0; z < Z; z++) {
    files.push({
      name: `phantom-${seed}/${z + 1}.dcm`,
      bytes: writeCtSlice({
        studyUid,
        seriesUid,
        sopUid: `${seriesUid}.${z + 1}`,
        patientId: `phantom-${seed}`,
        instanceNumber: z + 1,
        position: [-(X / 2) * st.spacing[2], -(Y / 2) * st.spacing[1], 60 - z * st.spacing[0]],
        orientation: [1, 0, 0, 0, 1, 0],
        pixelSpacing: [st.spacing[1], st.spacing[2]],
        sliceThickness: st.spacing[0],
        rows: Y,
        cols: X,
        pixels: st.hu.slice(z * Y * X, (z + 1) * Y * X),
        rescaleIntercept: 0,
        rescaleSlope: 1,
        jpegLossless: false,
      }),
    });
  }
  return files;
}

async function run(files: () => Promise<{ name: string; bytes: Uint8Array }[]>, name: string) {
  if (state.state === "running") return;
  $("error").hidden = true;
  $("result").hidden = true;
  $("steps").textContent = "";
  state.state = "running";
  state.result = null;
  const t: Record<string, number> = {};
  const t00 = performance.now();
  let t0 = t00;
  // A step may lap more than once (crops and classify per classifier member): its times add up.
  const lap = (k: string) => {
    const now = performance.now();
    t[k] = (t[k] ?? 0) + (now - t0) / 1000;
    step(k, "ok", t[k]);
    t0 = now;
  };
  try {
    step("read files", "run");
    await paint();
    const list = await files();
    lap("read files");
    step("read DICOM + preprocess", "run");
    await paint();
    const series = await seriesFromFiles(list, name);
    // Loose files have no folder name: the study is then named by its StudyInstanceUID.
    const study = studyFromSeries(series, name, { uid: name === LOOSE ? series.uids.study : undefined });
    lap("read DICOM + preprocess");
    if (!state.models) {
      throw new Error($("weights").textContent || "No weights: the study cannot be predicted.");
    }
    step("segment", "run");
    await paint();
    const next: Record<string, string> = { segment: "metadata", metadata: "crops", crops: "classify" };
    // The options of `deno task infer`'s defaults (infer/cli.ts).
    const r = await predictStudy(study, state.models, INFER_DEFAULTS, (k) => {
      lap(k);
      if (next[k]) step(next[k], "run");
    });
    const uid = study.uid;
    const rows = probabilityRows(r.probabilities, r.meta.boxes);
    state.result = {
      uid,
      probabilities: r.probabilities,
      rows: rows.map((row) => row.text),
      timings: t,
      seconds: (performance.now() - t00) / 1000,
    };
    show(study, r.labels, r.shape, uid, r.probabilities, rows);
    state.state = "done";
  } catch (e) {
    showError(`${name}: ${(e as Error).message}`);
  }
}

function download(id: string, name: string, bytes: Uint8Array, type: string) {
  const a = $<HTMLAnchorElement>(id);
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  a.download = name;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(s).arrayBuffer());
}

function show(
  study: ReturnType<typeof studyFromSeries>,
  labels: Uint8Array,
  shape: [number, number, number],
  uid: string,
  probs: number[],
  rows: ReturnType<typeof probabilityRows>,
) {
  const h = study.header;
  const [Z, S] = h.cubes.image_256!;
  const slope = h.units === "hu" ? 1 : h.rescale.slope, icpt = h.units === "hu" ? 0 : h.rescale.intercept;
  // Rows per slice so that the views keep the patient's proportions (slice gap vs the 256 grid's pixel).
  const pixel = (h.spacing[1] * study.geometry.shape[1]) / S;
  const rowsPer = Math.max(0.25, h.spacing[0] / pixel);
  const tbody = $("probs");
  tbody.textContent = "";
  rows.forEach((row, j) => {
    const tr = document.createElement("tr");
    const c = j ? COLORS[j] : [120, 120, 120];
    // A vertebra the segmentor did not find says so (as the report does), with no bar.
    tr.innerHTML = `<td><span class="sw" style="background:rgb(${c})"></span>${row.name}</td>` +
      `<td${row.probability === null ? ' class="missing"' : ""}>${row.text}</td><td>${
        row.probability === null
          ? ""
          : `<div class="bar" style="width:${(row.probability * 100).toFixed(1)}%"></div>`
      }</td>`;
    tbody.append(tr);
  });
  $("uid").textContent = uid;
  const draw = (canvas: HTMLCanvasElement, fixed: number, axis: "x" | "y") => {
    canvas.width = S;
    canvas.height = Math.round(Z * rowsPer);
    const ctx = canvas.getContext("2d")!;
    const img = ctx.createImageData(S, Z);
    for (let z = 0; z < Z; z++) {
      const lz = Math.min(shape[0] - 1, z >> 1);
      for (let i = 0; i < S; i++) {
        const [y, x] = axis === "x" ? [i, fixed] : [fixed, i];
        const hu = study.image_256[(z * S + y) * S + x] * slope + icpt;
        const g = Math.max(0, Math.min(255, ((hu + 400) / 1400) * 255));
        const l = labels[(lz * S + y) * S + x];
        const o = (z * S + i) * 4;
        const c = l ? COLORS[l] : null;
        img.data[o] = c ? 0.55 * g + 0.45 * c[0] : g;
        img.data[o + 1] = c ? 0.55 * g + 0.45 * c[1] : g;
        img.data[o + 2] = c ? 0.55 * g + 0.45 * c[2] : g;
        img.data[o + 3] = 255;
      }
    }
    const tmp = document.createElement("canvas");
    tmp.width = S;
    tmp.height = Z;
    tmp.getContext("2d")!.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, S, canvas.height);
  };
  const sag = $<HTMLInputElement>("sagX"), cor = $<HTMLInputElement>("corY");
  // Start where the vertebrae are: the centre of the predicted voxels.
  let cx = 0, cy = 0, n = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i]) (cx += i % S), (cy += Math.floor(i / S) % S), n++;
  }
  sag.max = cor.max = String(S - 1);
  sag.value = String(n ? Math.round(cx / n) : S >> 1);
  cor.value = String(n ? Math.round(cy / n) : S >> 1);
  const redraw = () => {
    draw($("sagittal"), Number(sag.value), "x");
    draw($("coronal"), Number(cor.value), "y");
    $("sagLabel").textContent = `x = ${sag.value}`;
    $("corLabel").textContent = `y = ${cor.value}`;
  };
  sag.oninput = cor.oninput = redraw;
  redraw();
  const csv = submissionCsv(new Map([[uid, probs]]), `${uid}.csv`);
  download("csv", "submission.csv", new TextEncoder().encode(csv), "text/csv");
  const nii = encodeNifti(labelsToNifti(labels, study), `${uid}.nii.gz`);
  gzip(nii).then((gz) => download("nifti", "vertebrae.nii.gz", gz, "application/gzip"));
  $("result").hidden = false;
}

const readAll = (files: File[]) =>
  Promise.all(files.map(async (f) => ({
    name: (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name,
    bytes: new Uint8Array(await f.arrayBuffer()),
  })));

const folderName = (files: File[]) => {
  const rel = (files[0] as File & { webkitRelativePath?: string })?.webkitRelativePath;
  return rel && rel.includes("/") ? rel.split("/")[0] : LOOSE;
};

function wire() {
  for (const id of ["folder", "files"]) {
    const input = $<HTMLInputElement>(id);
    input.onchange = () => {
      const files = [...(input.files ?? [])];
      if (files.length) run(() => readAll(files), folderName(files));
      input.value = "";
    };
  }
  $("phantom").onclick = () => {
    const seed = Number($<HTMLInputElement>("seed").value) || 1;
    run(() => Promise.resolve(phantomFiles(seed)), `phantom-${seed}`);
  };
  const zone = $("drop");
  zone.ondragover = (e) => {
    e.preventDefault();
    zone.classList.add("over");
  };
  zone.ondragleave = () => zone.classList.remove("over");
  zone.ondrop = (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const dt = e.dataTransfer!;
    const entries = [...dt.items].map((it) => it.webkitGetAsEntry?.()).filter((x): x is FileSystemEntry =>
      !!x
    );
    const plain = [...dt.files];
    const name = entries.length === 1 && entries[0].isDirectory ? entries[0].name : folderName(plain);
    run(async () => {
      const files = entries.length ? (await Promise.all(entries.map((en) => entryFiles(en)))).flat() : plain;
      if (!files.length) throw new Error("nothing was dropped (no files)");
      return readAll(files);
    }, name);
  };
}

wire();
start().catch((e) => showError((e as Error).message));

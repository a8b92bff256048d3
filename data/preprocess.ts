/**
 * @file The seed's preprocessing (seed-pipeline.md 1.2-1.5), into the cache of cache.ts: stored pixel values
 * (or, with `units: "hu"`, Hounsfield units rounded to int16), slices ordered cranial to caudal by position,
 * each resized to 256x256 like cv2 INTER_LINEAR, MONOCHROME1 inverted after the resize (slice max - value),
 * masks mapped with the RSNA rule and resized nearest; per-study mean/std of the 256 cube (all slices and
 * [::2]). `preprocessSeries` is the one computation (infer/study.ts keeps its result in memory);
 * `preprocessStudy` writes it to the cache. `preprocessDataset` runs studies in parallel Workers, shows
 * progress, skips studies already cached and never leaves a half-written study (a `.partial` folder is
 * renamed into place).
 */
import { type DicomSeries, readDicomSeries, type ReadSeriesOptions } from "./dicom.ts";
import { niftiToVolume, type NiftiVolume, readNifti } from "./nifti.ts";
import { resizeLinear16, resizeNearest8 } from "./resize.ts";
import type { CacheHeader } from "./cache.ts";
import { listStudies, type Study } from "./rsna.ts";

/** Options of the preprocessing. */
export interface PreprocessOptions {
  /** "stored" (default, seed-compatible) or "hu". */
  units?: "stored" | "hu";
  /** Also keep the full-resolution cube (default true; the classifier crops from it). */
  full?: boolean;
  size?: number;
  series?: ReadSeriesOptions;
}

function invertMono1<T extends Int16Array | Uint16Array>(v: T, n: number, slices: number): void {
  for (let z = 0; z < slices; z++) {
    const s = v.subarray(z * n, (z + 1) * n);
    let mx = -Infinity;
    for (const x of s) if (x > mx) mx = x;
    for (let i = 0; i < n; i++) s[i] = mx - s[i];
  }
}

function stats(v: ArrayLike<number>, n: number, slices: number, step: number): [number, number] {
  let s = 0, s2 = 0, c = 0;
  for (let z = 0; z < slices; z += step) {
    for (let i = z * n; i < (z + 1) * n; i++) {
      s += v[i];
      s2 += v[i] * v[i];
      c++;
    }
  }
  const m = s / c;
  return [m, Math.sqrt(Math.max(0, s2 / c - m * m))];
}

/** The arrays and header of one preprocessed study: what the cache holds, in memory. */
export interface PreprocessedStudy {
  /** The header.json the cache writes for it. */
  header: CacheHeader;
  /** [Z, size, size], the element type of the stored values (or int16 HU). */
  image_256: Int16Array | Uint16Array;
  /** [Z, H, W] at the DICOM's size (null with `full: false`). */
  image_full: Int16Array | Uint16Array | null;
  /** [Z, size, size] uint8 labels (null without a mask). */
  mask_256: Uint8Array | null;
}

/** The integer a slice's file is named by (`.../123.dcm` -> 123), or null. */
export function fileNumber(path: string): number | null {
  const m = /(?:^|[\\/])(\d+)(?:\.dcm)?$/i.exec(path);
  return m ? Number(m[1]) : null;
}

/**
 * The seed's preprocessing of a series already read (the one computation behind the cache and the
 * in-memory studies of infer/study.ts): optional HU, 256 resize like cv2 INTER_LINEAR, MONOCHROME1
 * inversion after the resize, the mask through the RSNA rule resized nearest, and the statistics. With
 * stored units, `image_full` is the series' own pixel array (inverted in place for MONOCHROME1).
 */
export function preprocessSeries(
  series: DicomSeries,
  o: PreprocessOptions & { uid: string; mask?: { volume: NiftiVolume; path: string } },
): PreprocessedStudy {
  const size = o.size ?? 256;
  if (!Number.isInteger(size) || size < 1) {
    throw new Error(`preprocess ${o.uid}: size must be >= 1, got ${size}`);
  }
  const [Z, H, W] = series.shape;
  let px: Int16Array | Uint16Array = series.pixels;
  if (o.units === "hu") {
    const hu = new Int16Array(px.length);
    for (let i = 0; i < px.length; i++) {
      hu[i] = Math.max(
        -32768,
        Math.min(32767, Math.round(px[i] * series.rescale.slope + series.rescale.intercept)),
      );
    }
    px = hu;
  }
  const n = size * size;
  const small = px instanceof Int16Array ? new Int16Array(Z * n) : new Uint16Array(Z * n);
  for (let z = 0; z < Z; z++) {
    small.set(resizeLinear16(px.subarray(z * H * W, (z + 1) * H * W), H, W, size, size), z * n);
  }
  const full = o.full ?? true;
  if (series.photometric === "MONOCHROME1") {
    invertMono1(small, n, Z);
    if (full) invertMono1(px, H * W, Z);
  }
  let mask: Uint8Array | null = null;
  if (o.mask) {
    const m = niftiToVolume(o.mask.volume, series.shape, o.mask.path);
    mask = new Uint8Array(Z * n);
    for (let z = 0; z < Z; z++) {
      mask.set(resizeNearest8(m.subarray(z * H * W, (z + 1) * H * W), H, W, size, size), z * n);
    }
  }
  const [mean, std] = stats(small, n, Z, 1);
  const [mean2, std2] = stats(small, n, Z, 2);
  const header: CacheHeader = {
    version: 1,
    uid: o.uid,
    units: o.units ?? "stored",
    dtype: px instanceof Int16Array ? "int16" : "uint16",
    cubes: {
      image_256: [Z, size, size],
      ...(full ? { image_full: [Z, H, W] } : {}),
      ...(mask ? { mask_256: [Z, size, size] } : {}),
    },
    spacing: series.spacing,
    rescale: series.rescale,
    photometric: series.photometric,
    mean,
    std,
    mean2,
    std2,
    sliceNumbers: series.files.map(fileNumber),
  };
  return { header, image_256: small, image_full: full ? px : null, mask_256: mask };
}

/** Preprocesses one study into `<cache>/<uid>/` atomically; returns its header. */
export async function preprocessStudy(
  study: Study,
  cache: string,
  o: PreprocessOptions = {},
): Promise<CacheHeader> {
  const series = await readDicomSeries(study.dir, o.series);
  const mask = study.mask ? { volume: await readNifti(study.mask), path: study.mask } : undefined;
  const p = preprocessSeries(series, { ...o, uid: study.uid, mask });
  const dir = `${cache}/${study.uid}`, tmp = `${dir}.partial`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const raw = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  await Deno.writeFile(`${tmp}/image_256.raw`, raw(p.image_256));
  if (p.image_full) await Deno.writeFile(`${tmp}/image_full.raw`, raw(p.image_full));
  if (p.mask_256) await Deno.writeFile(`${tmp}/mask_256.raw`, p.mask_256);
  await Deno.writeTextFile(`${tmp}/header.json`, JSON.stringify(p.header, null, 1));
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, dir);
  return p.header;
}

/** Progress of {@link preprocessDataset}. */
export interface Progress {
  done: number;
  total: number;
  skipped: number;
  uid: string;
  seconds: number;
}

/**
 * Preprocesses every study of an RSNA-layout folder into `cache` with `workers` parallel Workers, skipping
 * studies already cached. Failed studies are reported together at the end (the others still complete).
 */
export async function preprocessDataset(
  root: string,
  cache: string,
  o: PreprocessOptions & { workers?: number; onProgress?: (p: Progress) => void } = {},
): Promise<{ processed: string[]; skipped: string[] }> {
  const studies = await listStudies(root);
  if (!studies.length) throw new Error(`${root}/train_images: no studies`);
  await Deno.mkdir(cache, { recursive: true });
  const skipped: string[] = [], todo: Study[] = [];
  for (const s of studies) {
    if (await Deno.stat(`${cache}/${s.uid}/header.json`).then(() => true, () => false)) skipped.push(s.uid);
    else todo.push(s);
  }
  const t0 = performance.now();
  const processed: string[] = [], failed: string[] = [];
  const nWorkers = Math.max(1, Math.min(o.workers ?? navigator.hardwareConcurrency ?? 2, todo.length));
  const { onProgress, ...opts } = o;
  let next = 0;
  const runWorker = () =>
    new Promise<void>((resolve) => {
      const w = new Worker(new URL("./preprocess_worker.ts", import.meta.url), { type: "module" });
      const give = () => {
        if (next >= todo.length) {
          w.terminate();
          resolve();
          return;
        }
        w.postMessage({ study: todo[next++], cache, opts });
      };
      w.onmessage = (e: MessageEvent<{ uid: string; error?: string }>) => {
        if (e.data.error) failed.push(`${e.data.uid}: ${e.data.error}`);
        else processed.push(e.data.uid);
        onProgress?.({
          done: processed.length + failed.length,
          total: todo.length,
          skipped: skipped.length,
          uid: e.data.uid,
          seconds: (performance.now() - t0) / 1000,
        });
        give();
      };
      w.onerror = (e) => {
        e.preventDefault();
        failed.push(`worker crashed: ${e.message}`);
        w.terminate();
        resolve();
      };
      give();
    });
  await Promise.all(Array.from({ length: nWorkers }, runWorker));
  if (failed.length) {
    throw new Error(
      `preprocessing failed for ${failed.length} stud${failed.length > 1 ? "ies" : "y"}:\n${
        failed.join("\n")
      }`,
    );
  }
  return { processed, skipped };
}

/**
 * @file Synthetic cervical-spine CT phantoms in the RSNA 2022 layout, the built-in default dataset of every
 * job: `train_images/<uid>/<n>.dcm` (int16 CT, realistic spacing, varied slice counts; some studies JPEG
 * Lossless, some numbered from the cranial end), `segmentations/<uid>.nii` (labels 1..7 for C1..C7) for a
 * subset, and `train.csv`. Each study is a neck (soft tissue, air, airway) with seven stacked vertebrae
 * (cortical shell, cancellous body, posterior arch) separated by discs along a lordotic curve; a fractured
 * vertebra gets a thin low-density crack at a random angle.
 */
import { mulberry32 } from "../core/random.ts";
import { writeCtSlice } from "./dicom_write.ts";
import { volumeToNifti, writeNifti } from "./nifti.ts";

/** Options of {@link writeSyntheticDataset}. */
export interface SynthOptions {
  out: string;
  studies: number;
  seed: number;
  /** In-plane size (default 128). */
  size?: number;
  /** Fraction of studies with a mask (default 0.5). */
  maskFraction?: number;
  /** Called after each study (for progress). */
  onStudy?: (i: number, uid: string) => void;
}

/** Per-study labels as written to train.csv. */
export interface StudyLabels {
  uid: string;
  patientOverall: number;
  vertebrae: number[];
}

/** mulberry32: deterministic floats in [0, 1) from a 32-bit seed. */
export const rng: (seed: number) => () => number = mulberry32;

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/** One study's HU volume [Z, Y, X] (slice 0 most cranial), label volume and fracture labels. */
export function phantomStudy(seed: number, size = 128): {
  hu: Int16Array;
  labels: Uint8Array;
  shape: [number, number, number];
  spacing: [number, number, number];
  fractured: number[];
} {
  const r = rng(seed);
  const Z = 64 + Math.floor(r() * 33); // 64..96 slices
  const dz = [1.0, 1.25, 0.8][Math.floor(r() * 3)];
  const dxy = 0.85 + r() * 0.3;
  const Y = size, X = size;
  const hu = new Int16Array(Z * Y * X);
  const labels = new Uint8Array(Z * Y * X);
  const positive = r() < 0.5;
  const fractured = new Array(7).fill(0);
  if (positive) {
    let any = false;
    for (let v = 0; v < 7; v++) if (r() < 0.3) (fractured[v] = 1), (any = true);
    if (!any) fractured[Math.floor(r() * 7)] = 1;
  }
  // Vertebra layout along z (cranial first): bodies ~ 14 mm tall with ~4 mm discs, starting a few mm below
  // the top of the scan.
  const mm = (v: number) => v / dxy;
  const top = 4 + r() * 6;
  const height = (Z * dz - top - 6) / 7;
  const cx0 = X / 2 + (r() - 0.5) * 6, cy0 = Y / 2 + mm(8) + (r() - 0.5) * 6;
  const cracks = fractured.map(() => ({
    a: r() * Math.PI,
    tilt: (r() - 0.5) * 1.2,
    off: (r() - 0.5) * 0.6,
    w: 0.6 + r() * 0.6,
  }));
  const neckA = mm(48 + r() * 8), neckB = mm(40 + r() * 8);
  for (let z = 0; z < Z; z++) {
    const zmm = z * dz;
    const t = (zmm - top) / height; // vertebra coordinate
    const v = Math.floor(t);
    const frac = t - v;
    // Lordosis: the column bends forward in the middle of the neck.
    const bend = mm(6) * Math.sin(Math.PI * Math.min(Math.max(zmm / (Z * dz), 0), 1));
    const cx = cx0, cy = cy0 - bend;
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        const i = (z * Y + y) * X + x;
        const nx = (x - X / 2) / neckA, ny = (y - Y / 2 - mm(4)) / neckB;
        let val = nx * nx + ny * ny < 1 ? 40 : -1000;
        if (Math.hypot(x - X / 2, y - (Y / 2 - mm(18))) < mm(7)) val = -950; // airway
        if (v >= 0 && v < 7) {
          const inDisc = frac > 0.78;
          const dx = (x - cx) / mm(9 + v * 0.6), dy = (y - (cy - mm(4))) / mm(7.5);
          const body = dx * dx + dy * dy;
          // Posterior arch: a ring behind the body.
          const ax = (x - cx) / mm(13), ay = (y - (cy + mm(9))) / mm(9);
          const ring = ax * ax + ay * ay;
          const inArch = ring < 1 && ring > 0.55 && y > cy + mm(2) && !inDisc;
          if (body < 1) {
            if (inDisc) val = 80;
            else {
              val = body > 0.7 ? 1100 : 280;
              labels[i] = v + 1;
            }
          } else if (inArch) {
            val = 900;
            labels[i] = v + 1;
          }
          if (labels[i] && fractured[v]) {
            const c = cracks[v];
            // A thin plane through the vertebra: distance to it in mm.
            const px = (x - cx) * dxy, py = (y - cy) * dxy, pz = (frac - 0.4 - c.off * 0.3) * height;
            const d = Math.abs(px * Math.cos(c.a) + py * Math.sin(c.a) + pz * c.tilt * 6);
            if (d < c.w) val = -20; // a fracture gap: below soft tissue
          }
        }
        hu[i] = Math.round(val + gauss(r) * 18);
      }
    }
  }
  // Outside the scanner's field of view (a circle), CT stores a padding value.
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        if (Math.hypot(x - X / 2 + 0.5, y - Y / 2 + 0.5) > X / 2) hu[(z * Y + y) * X + x] = -2000;
      }
    }
  }
  return { hu, labels, shape: [Z, Y, X], spacing: [dz, dxy, dxy], fractured };
}

function uid(r: () => number): string {
  let s = "1.2.826.0.1.3680043.10.1378.";
  for (let k = 0; k < 3; k++) s += `${Math.floor(r() * 1e9)}.`;
  return s.slice(0, -1);
}

/** Writes `studies` phantom studies and train.csv under `out`; returns the labels. */
export async function writeSyntheticDataset(o: SynthOptions): Promise<StudyLabels[]> {
  const size = o.size ?? 128;
  const r = rng(o.seed);
  await Deno.mkdir(`${o.out}/train_images`, { recursive: true });
  await Deno.mkdir(`${o.out}/segmentations`, { recursive: true });
  const rows: StudyLabels[] = [];
  for (let s = 0; s < o.studies; s++) {
    const studyUid = uid(r), seriesUid = uid(r);
    const st = phantomStudy(Math.floor(r() * 2 ** 31), size);
    const [Z, Y, X] = st.shape;
    const jpeg = r() < 0.34;
    const cranialFirstNames = r() < 0.34;
    const shifted = r() < 0.5; // stored = HU + 1024 with intercept -1024, or stored = HU with intercept 0
    const dir = `${o.out}/train_images/${studyUid}`;
    const tmp = `${dir}.partial`;
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await Deno.mkdir(tmp, { recursive: true });
    const z0 = 50 + r() * 30;
    for (let z = 0; z < Z; z++) {
      const px = st.hu.slice(z * Y * X, (z + 1) * Y * X);
      if (shifted) { for (let i = 0; i < px.length; i++) px[i] += 1024; }
      const n = cranialFirstNames ? z + 1 : Z - z;
      await Deno.writeFile(
        `${tmp}/${n}.dcm`,
        writeCtSlice({
          studyUid,
          seriesUid,
          sopUid: `${seriesUid}.${z + 1}`,
          patientId: `phantom-${s}`,
          instanceNumber: n,
          position: [-(X / 2) * st.spacing[2], -(Y / 2) * st.spacing[1], z0 - z * st.spacing[0]],
          orientation: [1, 0, 0, 0, 1, 0],
          pixelSpacing: [st.spacing[1], st.spacing[2]],
          sliceThickness: st.spacing[0],
          rows: Y,
          cols: X,
          pixels: px,
          rescaleIntercept: shifted ? -1024 : 0,
          rescaleSlope: 1,
          jpegLossless: jpeg,
        }),
      );
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dir);
    if (r() < (o.maskFraction ?? 0.5)) {
      const geo = {
        shape: st.shape,
        spacing: st.spacing,
        origin: [-(X / 2) * st.spacing[2], -(Y / 2) * st.spacing[1], z0] as [number, number, number],
        direction: [[1, 0, 0], [0, 1, 0], [0, 0, -1]] as [
          [number, number, number],
          [number, number, number],
          [number, number, number],
        ],
      };
      await writeNifti(`${o.out}/segmentations/${studyUid}.nii`, volumeToNifti(st.labels, geo));
    }
    rows.push({
      uid: studyUid,
      patientOverall: st.fractured.some((f) => f) ? 1 : 0,
      vertebrae: st.fractured,
    });
    o.onStudy?.(s, studyUid);
  }
  const csv = [
    "StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7",
    ...rows.map((x) => [x.uid, x.patientOverall, ...x.vertebrae].join(",")),
  ];
  const tmpCsv = `${o.out}/train.csv.tmp`;
  await Deno.writeTextFile(tmpCsv, csv.join("\n") + "\n");
  await Deno.rename(tmpCsv, `${o.out}/train.csv`);
  return rows;
}

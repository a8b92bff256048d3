/**
 * @file Synthetic cervical-spine CT phantoms in the RSNA 2022 layout, the built-in default dataset of every
 * job: `train_images/<uid>/<n>.dcm` (int16 CT; some studies JPEG Lossless, some numbered from the cranial
 * end, some stored with a -1024 intercept), `segmentations/<uid>.nii` (labels 1..7 for C1..C7, 8 and 9 for
 * T1 and T2, as the RSNA masks) for a subset, `train.csv`, and `train_bounding_boxes.csv` (RSNA's per-slice
 * fracture boxes; here for every fractured study, from the difference to its intact twin). The anatomy (data/synth/anatomy.ts) tells the
 * levels apart as real CT does: the atlas ring without a body, the axis with its dens, bodies growing
 * caudally, C7's long spinous process, T1 with the first ribs, the skull base above and the mandible and
 * hyoid in front; patients vary in size, posture, scan extent, slice spacing, noise and blur
 * (data/synth/layout.ts); about half the studies carry fractures (data/synth/fracture.ts).
 */
import { mulberry32 } from "../core/random.ts";
import { writeCtSlice } from "./dicom_write.ts";
import { volumeToNifti, writeNifti } from "./nifti.ts";
import { drawPatient, layoutPhantom } from "./synth/layout.ts";
import type { Fracture } from "./synth/fracture.ts";
import { type Grid, renderBones, renderSoftTissue, renderSpineSoft, scan } from "./synth/render.ts";

export type { Fracture } from "./synth/fracture.ts";

/** Version of the generator: recorded with a written dataset, so that a folder from an older one is rewritten. */
export const PHANTOM_VERSION = 4;

/** Options of {@link writeSyntheticDataset}. */
export interface SynthOptions {
  out: string;
  studies: number;
  seed: number;
  /** In-plane size in pixels (default 128; the field of view is 150-190 mm whatever the size). */
  size?: number;
  /** Fraction of studies with a mask (default 0.5). */
  maskFraction?: number;
  /** Fraction of studies with a fracture (default 0.5). */
  positiveFraction?: number;
  /** Slice spacings to draw from, mm (default 1.25, 1.5, 2, 2.5: thin enough for the fractures, thick enough that the tiny preset's 32-slice windows of every second slice see most of the neck). */
  thickness?: number[];
  /**
   * Fraction of the fractured studies whose fracture boxes go into train_bounding_boxes.csv (default 1; RSNA's
   * covers about a quarter of its fractured studies). Drawn from a stream of its own: the studies do not change.
   */
  boxFraction?: number;
  /** Called after each study (for progress, or a picture of it); awaited. */
  onStudy?: (i: number, uid: string, study: PhantomStudy) => void | Promise<void>;
}

/** Options of {@link phantomStudy} beyond the seed and size. */
export interface PhantomOptions {
  positiveFraction?: number;
  thickness?: number[];
  /** false: the same patient without its fractures (for tests and pictures). */
  fractures?: boolean;
}

/** Per-study labels as written to train.csv. */
export interface StudyLabels {
  uid: string;
  patientOverall: number;
  vertebrae: number[];
}

/** mulberry32: deterministic floats in [0, 1) from a 32-bit seed. */
export const rng: (seed: number) => () => number = mulberry32;

/** One phantom: HU and label volumes [Z, Y, X] (slice 0 most cranial) and what is in them. */
export interface PhantomStudy {
  /** The seed it was drawn from (`phantomStudy(seed, size, { fractures: false })` renders its intact twin). */
  seed: number;
  hu: Int16Array;
  labels: Uint8Array;
  shape: [number, number, number];
  /** [z, y, x] mm. */
  spacing: [number, number, number];
  /** C1..C7: 1 where fractured. */
  fractured: number[];
  fractures: Fracture[];
  /** Body (C1: ring) centre of each level C1..T2 in voxel coordinates [z, y, x] (may lie outside the scan). */
  centres: Record<string, [number, number, number]>;
}

/** One study's volumes from its seed. */
export function phantomStudy(seed: number, size = 128, o: PhantomOptions = {}): PhantomStudy {
  const r = rng(seed);
  const patient = drawPatient(r, o.thickness ?? [1.25, 1.5, 2, 2.5]);
  const positive = r() < (o.positiveFraction ?? 0.5);
  // Separate streams: the anatomy does not change with the fractures, nor the noise with either.
  const layout = layoutPhantom(rng(seed ^ 0x5bd1e995), patient, positive && o.fractures !== false);
  const c1 = layout.centres.get("C1")!, c7 = layout.centres.get("C7")!;
  const top = c1[2] - 7 * patient.scale, bottom = c7[2] + 7.5 * patient.scale;
  // Scan extent: from mid-C1 to the skull base above it; from C7's lower endplate into the upper thorax.
  patient.zTop = top - (r() < 0.25 ? -(2 + r() * 4) : 5 + r() * 30);
  patient.zBottom = bottom + (r() < 0.3 ? r() * 3 : 5 + r() * 40);
  const px = patient.fov / size, dz = patient.dz;
  const Z = Math.max(8, Math.round((patient.zBottom - patient.zTop) / dz) + 1);
  const g: Grid = {
    X: size,
    Y: size,
    Z,
    px,
    dz,
    x0: (0.5 - size / 2) * px,
    y0: (0.5 - size / 2) * px + 10 * patient.scale,
    z0: patient.zTop,
  };
  const hu = new Float32Array(Z * size * size);
  const labels = new Uint8Array(Z * size * size);
  renderSoftTissue(layout, g, hu, r);
  renderSpineSoft(layout.soft, g, hu);
  renderBones(layout, g, hu, labels);
  const fractured = new Array(7).fill(0);
  for (const f of layout.fractures) fractured[f.level - 1] = 1;
  const centres: Record<string, [number, number, number]> = {};
  for (const [name, c] of layout.centres) {
    centres[name] = [(c[2] - g.z0) / dz, (c[1] - g.y0) / px, (c[0] - g.x0) / px];
  }
  return {
    seed,
    hu: scan(hu, g, patient.blur, patient.noise, r),
    labels,
    shape: [Z, size, size],
    spacing: [dz, px, px],
    fractured,
    fractures: layout.fractures,
    centres,
  };
}

/** One row of train_bounding_boxes.csv: a fracture's box on one slice, in pixels (x: column, y: row). */
export interface FractureBox {
  x: number;
  y: number;
  width: number;
  height: number;
  /** The slice's index in the volume, slice 0 most cranial (the file number is written instead). */
  z: number;
}

/**
 * The boxes of a study's fractures: on each slice, the voxels where the study and its intact twin
 * (`phantomStudy(seed, size, { fractures: false })`) differ by more than `hu`, grouped 8-connected after
 * growing each by `grow` pixels (so one break's pieces give one box), each group's extent.
 */
export function fractureBoxes(study: PhantomStudy, twin: PhantomStudy, hu = 100, grow = 2): FractureBox[] {
  const [Z, Y, X] = study.shape;
  const out: FractureBox[] = [];
  const hit = new Uint8Array(Y * X), near = new Uint8Array(Y * X), group = new Int32Array(Y * X);
  for (let z = 0; z < Z; z++) {
    const o = z * Y * X;
    let any = false;
    for (let i = 0; i < Y * X; i++) {
      hit[i] = Math.abs(study.hu[o + i] - twin.hu[o + i]) > hu ? 1 : 0;
      any ||= hit[i] === 1;
    }
    if (!any) continue;
    near.fill(0);
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        if (!hit[y * X + x]) continue;
        for (let v = Math.max(0, y - grow); v <= Math.min(Y - 1, y + grow); v++) {
          near.fill(1, v * X + Math.max(0, x - grow), v * X + Math.min(X - 1, x + grow) + 1);
        }
      }
    }
    group.fill(0);
    for (let start = 0, g = 0; start < Y * X; start++) {
      if (!hit[start] || group[start]) continue;
      g++;
      let x0 = X, y0 = Y, x1 = -1, y1 = -1;
      const stack = [start];
      group[start] = g;
      while (stack.length) {
        const i = stack.pop()!, y = Math.floor(i / X), x = i - y * X;
        if (hit[i]) x0 = Math.min(x0, x), x1 = Math.max(x1, x), y0 = Math.min(y0, y), y1 = Math.max(y1, y);
        for (let v = Math.max(0, y - 1); v <= Math.min(Y - 1, y + 1); v++) {
          for (let u = Math.max(0, x - 1); u <= Math.min(X - 1, x + 1); u++) {
            const j = v * X + u;
            if (near[j] && !group[j]) group[j] = g, stack.push(j);
          }
        }
      }
      out.push({ x: x0, y: y0, width: x1 - x0 + 1, height: y1 - y0 + 1, z });
    }
  }
  return out;
}

function uid(r: () => number): string {
  let s = "1.2.826.0.1.3680043.10.1378.";
  for (let k = 0; k < 3; k++) s += `${Math.floor(r() * 1e9)}.`;
  return s.slice(0, -1);
}

/** What {@link writeSyntheticDataset} draws for one study before rendering it. */
export interface StudyPlan {
  studyUid: string;
  seriesUid: string;
  /** The seed of {@link phantomStudy}. */
  seed: number;
  /** Written as JPEG lossless rather than uncompressed. */
  jpeg: boolean;
  /** File names count from the cranial end (1.dcm is the top slice). */
  cranialFirstNames: boolean;
  /** Stored = HU + 1024 with intercept -1024 (else stored = HU, intercept 0). */
  shifted: boolean;
  /** z of the first slice's position (mm). */
  z0: number;
  /** Whether its mask goes into segmentations/ (against `maskFraction`). */
  masked: boolean;
}

/**
 * The draws of one study from the dataset's stream `r`, in the order {@link writeSyntheticDataset} makes
 * them: exported so that a tool can find a written study's seed (bench/recipe/twin_masks.ts) by calling this
 * once per study instead of copying the order.
 */
export function drawStudyPlan(r: () => number, maskFraction = 0.5): StudyPlan {
  const studyUid = uid(r), seriesUid = uid(r);
  const seed = Math.floor(r() * 2 ** 31);
  const jpeg = r() < 0.34, cranialFirstNames = r() < 0.34, shifted = r() < 0.5;
  const z0 = 50 + r() * 30;
  return { studyUid, seriesUid, seed, jpeg, cranialFirstNames, shifted, z0, masked: r() < maskFraction };
}

/** Writes `studies` phantom studies and train.csv under `out`; returns the labels. */
export async function writeSyntheticDataset(o: SynthOptions): Promise<StudyLabels[]> {
  const size = o.size ?? 128;
  const r = rng(o.seed);
  const rBoxes = rng(o.seed ^ 0x2b0c5e11);
  const boxRows: string[] = [];
  await Deno.mkdir(`${o.out}/train_images`, { recursive: true });
  await Deno.mkdir(`${o.out}/segmentations`, { recursive: true });
  const rows: StudyLabels[] = [];
  for (let s = 0; s < o.studies; s++) {
    // Every draw of the study's stream happens here (rendering and boxes use streams of their own).
    const { studyUid, seriesUid, seed, jpeg, cranialFirstNames, shifted, z0, masked } = drawStudyPlan(
      r,
      o.maskFraction,
    );
    const st = phantomStudy(seed, size, { positiveFraction: o.positiveFraction, thickness: o.thickness });
    const [Z, Y, X] = st.shape;
    const fileNumber = (z: number) => cranialFirstNames ? z + 1 : Z - z;
    if (st.fractures.length && rBoxes() < (o.boxFraction ?? 1)) {
      const twin = phantomStudy(seed, size, {
        positiveFraction: o.positiveFraction,
        thickness: o.thickness,
        fractures: false,
      });
      for (const b of fractureBoxes(st, twin)) {
        boxRows.push([studyUid, b.x, b.y, b.width, b.height, fileNumber(b.z)].join(","));
      }
    }
    const dir = `${o.out}/train_images/${studyUid}`;
    const tmp = `${dir}.partial`;
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await Deno.mkdir(tmp, { recursive: true });
    for (let z = 0; z < Z; z++) {
      const px = st.hu.slice(z * Y * X, (z + 1) * Y * X);
      if (shifted) { for (let i = 0; i < px.length; i++) px[i] += 1024; }
      const n = fileNumber(z);
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
    if (masked) {
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
    await o.onStudy?.(s, studyUid, st);
  }
  const csv = [
    "StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7",
    ...rows.map((x) => [x.uid, x.patientOverall, ...x.vertebrae].join(",")),
  ];
  const boxes = ["StudyInstanceUID,x,y,width,height,slice_number", ...boxRows];
  for (const [name, lines] of [["train.csv", csv], ["train_bounding_boxes.csv", boxes]] as const) {
    await Deno.writeTextFile(`${o.out}/${name}.tmp`, lines.join("\n") + "\n");
    await Deno.rename(`${o.out}/${name}.tmp`, `${o.out}/${name}`);
  }
  return rows;
}

/**
 * @file One phantom patient: drawn sizes and posture (scale, lordosis or a straight neck, head flexion, tilt
 * and rotation), the vertebrae stacked along the curved spine with their discs, the landmarks placed with
 * the head or the levels they belong to, the scan's extent, and the fractures.
 */
import { atlas, axis, BODY, firstRibs, hyoid, mandible, type Part, skullBase, subaxial } from "./anatomy.ts";
import { applyCompression, drawFracture, drawLevels, type Fracture } from "./fracture.ts";
import { type Mat3, rotation, type Vec3 } from "./shapes.ts";

/** A rigid group of bone in the world: a vertebra (label 1..9) or an unlabelled landmark (label 0). */
export interface BoneGroup {
  name: string;
  /** Mask label: 1..7 for C1..C7, 8 and 9 for T1 and T2 (as the RSNA masks), 0 for landmarks. */
  label: number;
  /** World position of the frame's origin (mm) and its rotation (world = origin + scale * R * local). */
  origin: Vec3;
  rot: Mat3;
  scale: number;
  parts: Part[];
  fractures: Fracture[];
}

/** A soft structure along the spine, in a level's frame: a disc or the canal with the cord. */
export interface SpineSoft {
  origin: Vec3;
  rot: Mat3;
  scale: number;
  /** Disc above this level's body: half width, half depth, z range (local mm). */
  disc: { hw: number; hd: number; z0: number; z1: number } | null;
  /** Canal (CSF) and cord: centre y, half width, half depth, z range (local mm). */
  canal: { y: number; hw: number; hd: number; z0: number; z1: number };
}

/** Drawn properties of the patient and the scan. */
export interface Patient {
  scale: number;
  /** Anterior bow of the cervical spine at mid-neck (mm; about 0 for a straight neck). */
  lordosis: number;
  /** Head flexion (rad, + forward), lateral tilt and axial rotation (rad). */
  flexion: number;
  tilt: number;
  rotation: number;
  /** Neck half width / half depth at mid-neck (mm) and subcutaneous fat (mm). */
  neckA: number;
  neckB: number;
  fat: number;
  /** Cortical and cancellous bone (HU). */
  cortical: number;
  cancellous: number;
  /** Scan: first and last world z (mm), field of view (mm), slice spacing (mm). */
  zTop: number;
  zBottom: number;
  fov: number;
  dz: number;
  /** Image noise (HU, one standard deviation) and reconstruction blur (voxels). */
  noise: number;
  blur: number;
  /** Offset of the neck in the field of view (mm). */
  shift: [number, number];
}

/** The layout of one phantom: bones, soft spine structures, the spine's centreline per level. */
export interface Layout {
  patient: Patient;
  groups: BoneGroup[];
  soft: SpineSoft[];
  /** Per level C1..T2: the body centre in world mm (C1: the ring centre). */
  centres: Map<string, Vec3>;
  fractures: Fracture[];
}

const LEVELS = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2"];

/** A standard normal draw from uniform draws (Box-Muller). */
export function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/** Draws a patient and a scan of it. `thickness` lists the slice spacings to draw from (mm). */
export function drawPatient(r: () => number, thickness: number[]): Patient {
  const scale = 0.9 + r() * 0.2;
  return {
    scale,
    lordosis: r() < 0.2 ? (r() - 0.5) * 4 : 4 + r() * 10,
    flexion: (r() - 0.5) * 0.35,
    tilt: (r() - 0.5) * 0.12,
    rotation: (r() - 0.5) * 0.5,
    neckA: (52 + r() * 14) * scale,
    neckB: (55 + r() * 12) * scale,
    fat: 4 + r() * 12,
    cortical: 900 + r() * 500,
    cancellous: 170 + r() * 200,
    zTop: 0,
    zBottom: 0,
    fov: 150 + r() * 40,
    dz: thickness[Math.floor(r() * thickness.length)],
    noise: 10 + r() * 20,
    blur: 0.45 + r() * 0.45,
    shift: [gauss(r) * 4, gauss(r) * 4],
  };
}

/** Where each level's frame sits along the spine, in arc length from C1's centre (mm, before scale). */
function stack(discs: number[]): Map<string, number> {
  const s = new Map<string, number>([["C1", 0]]);
  // C2's body top meets the atlas' lateral masses (joint 2 mm).
  s.set("C2", 7 + 2 + BODY.C2.hh);
  for (let i = 2; i < LEVELS.length; i++) {
    const prev = LEVELS[i - 1], cur = LEVELS[i];
    s.set(cur, s.get(prev)! + BODY[prev].hh + discs[i - 2] + BODY[cur].hh);
  }
  return s;
}

/** Builds the layout of one phantom from its random stream. */
export function layoutPhantom(r: () => number, p: Patient, positive: boolean): Layout {
  const discs = LEVELS.slice(2).map((l) => (l.startsWith("T") ? 4 : 4.5 + r() * 1.5));
  const arcS = stack(discs);
  const S = arcS.get("C7")! * p.scale;
  // The spine's centreline: y(s) bows anteriorly (lordosis), the head's flexion moves the top forward,
  // a lateral tilt moves it sideways.
  const cy = (s: number) =>
    -p.lordosis * Math.sin(Math.PI * Math.max(0, Math.min(1, s / S))) - p.flexion * 0.3 * Math.max(0, S - s);
  const cx = (s: number) => p.tilt * 0.4 * Math.max(0, S - s);
  const centres = new Map<string, Vec3>();
  const frames = new Map<string, { origin: Vec3; rot: Mat3 }>();
  for (const [i, name] of LEVELS.entries()) {
    const s = arcS.get(name)! * p.scale;
    const dy = (cy(s + 1) - cy(s - 1)) / 2, dx = (cx(s + 1) - cx(s - 1)) / 2;
    const axial = p.rotation * (i === 0 ? 1 : i === 1 ? 0.3 : 0.04 * Math.max(0, 6 - i));
    const origin: Vec3 = [cx(s) + p.shift[0], cy(s) + p.shift[1], s];
    centres.set(name, origin);
    frames.set(name, { origin, rot: rotation(-Math.atan(dy), Math.atan(dx), axial) });
  }
  const fractures: Fracture[] = [];
  const fracturedLevels = positive ? drawLevels(r) : [];
  const groups: BoneGroup[] = LEVELS.map((name, i) => {
    let parts = i === 0 ? atlas() : i === 1 ? axis() : subaxial(name);
    if (name === "T1") parts = [...parts, ...firstRibs().map((x) => ({ ...x, name: `rib:${x.name}` }))];
    const fr: Fracture[] = [];
    if (fracturedLevels.includes(i + 1)) {
      const f = drawFracture(i + 1, parts.filter((x) => !x.name.startsWith("rib:")), r);
      parts = applyCompression(i + 1, parts, f);
      fr.push(f);
      fractures.push(f);
    }
    return { name, label: i + 1, ...frames.get(name)!, scale: p.scale, parts, fractures: fr };
  });
  // Landmarks move with the head (skull base, mandible) or the level they lie at (hyoid).
  const head = frames.get("C1")!, c2 = frames.get("C2")!, c3 = frames.get("C3")!;
  const headRot = rotation(-p.flexion * 0.8, p.tilt, p.rotation);
  groups.push({
    name: "skull base",
    label: 0,
    origin: head.origin,
    rot: headRot,
    scale: p.scale,
    parts: skullBase(),
    fractures: [],
  });
  groups.push({
    name: "mandible",
    label: 0,
    origin: [c2.origin[0], c2.origin[1] - 2, c2.origin[2] - 6 + p.flexion * 30],
    rot: headRot,
    scale: p.scale,
    parts: mandible(),
    fractures: [],
  });
  groups.push({ name: "hyoid", label: 0, ...c3, scale: p.scale, parts: hyoid(), fractures: [] });
  const soft = LEVELS.slice(1).map((name, k): SpineSoft => {
    const d = BODY[name], f = frames.get(name)!;
    const disc = k === 0
      ? null
      : { hw: d.hw * 0.95, hd: d.hd * 0.95, z0: -d.hh - discs[k - 1] - 0.5, z1: -d.hh + 0.5 };
    return {
      ...f,
      scale: p.scale,
      disc,
      canal: { y: d.hd + 8, hw: 11, hd: 7.5, z0: -d.hh - (k === 0 ? 14 : discs[k - 1]) - 1, z1: d.hh + 1 },
    };
  });
  return { patient: p, groups, soft, centres, fractures };
}

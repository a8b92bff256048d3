/**
 * @file Turns a phantom's layout into a CT volume: soft tissue slice by slice (skin and subcutaneous fat,
 * muscle with a faint texture, airway from the pharynx to the trachea, larynx cartilage, oesophagus,
 * thyroid, jugular veins, lung apices, the head above C1, the CT table), the spine's discs, canal and cord,
 * then the bones with a cortical shell over cancellous bone and partial volume at their surface; then the
 * reconstruction kernel's blur, quantum noise and the scanner's circular field of view.
 */
import { type BoneGroup, gauss, type Layout, type SpineSoft } from "./layout.ts";
import { brokenSdf } from "./fracture.ts";
import { type Bounds, type Mat3, unionBounds, type Vec3 } from "./shapes.ts";

/** The voxel grid: world mm of voxel (i, j, k) is (x0 + i px, y0 + j px, z0 + k dz). */
export interface Grid {
  X: number;
  Y: number;
  Z: number;
  px: number;
  dz: number;
  x0: number;
  y0: number;
  z0: number;
}

/** Hounsfield units of the soft tissues. */
export const HU = {
  air: -1000,
  fat: -95,
  muscle: 48,
  csf: 12,
  cord: 35,
  disc: 85,
  vessel: 40,
  thyroid: 90,
  cartilage: 150,
  lung: -850,
  blood: 55,
};

/** Cortical shell thickness (mm). */
const CORTEX = 1.1;

/** The spine's centre (x, y) at world z, interpolated between the levels' centres. */
function spineAt(layout: Layout, z: number): [number, number] {
  const cs = [...layout.centres.values()];
  if (z <= cs[0][2]) return [cs[0][0], cs[0][1]];
  for (let i = 1; i < cs.length; i++) {
    if (z <= cs[i][2]) {
      const t = (z - cs[i - 1][2]) / (cs[i][2] - cs[i - 1][2]);
      return [cs[i - 1][0] + t * (cs[i][0] - cs[i - 1][0]), cs[i - 1][1] + t * (cs[i][1] - cs[i - 1][1])];
    }
  }
  const l = cs[cs.length - 1];
  return [l[0], l[1]];
}

function smooth(a: number, b: number, t: number): number {
  const u = Math.max(0, Math.min(1, t));
  return a + (b - a) * u * u * (3 - 2 * u);
}

function inEllipse(dx: number, dy: number, a: number, b: number): boolean {
  return (dx * dx) / (a * a) + (dy * dy) / (b * b) < 1;
}

/** Soft tissue of every slice (everything but the spine and the bones). */
export function renderSoftTissue(layout: Layout, g: Grid, hu: Float32Array, r: () => number): void {
  const p = layout.patient, k = p.scale;
  const zc = (n: string) => layout.centres.get(n)![2];
  const waves = Array.from({ length: 3 }, () => [r() * 0.25, r() * 0.25, r() * 0.1, r() * 6.28, 3 + r() * 4]);
  const tableY = g.y0 + g.Y * g.px * (0.86 + r() * 0.08);
  for (let zi = 0; zi < g.Z; zi++) {
    const z = g.z0 + zi * g.dz;
    const [sx, sy] = spineAt(layout, z);
    const head = 1 - smooth(0, 1, (z - (zc("C1") - 30)) / 35);
    const shoulders = Math.max(0, z - zc("C6"));
    const a = p.neckA * (1 + 0.35 * head) + shoulders * 2.2,
      b = p.neckB * (1 + 0.45 * head) + shoulders * 0.45;
    const ocx = sx, ocy = sy + 12 * k + 8 * head;
    // Airway: nasopharynx/oropharynx, larynx, trachea; prevertebral soft tissue thicker below C4.
    const below4 = z > zc("C4");
    const [aa, ab] = z < zc("C3") ? [13 * k, 7 * k] : z < zc("C6") ? [9 * k, 8 * k] : [8 * k, 7.5 * k];
    const acy = sy - 9 * k - (below4 ? 12 : 4) * k - ab;
    const larynx = z > zc("C4") - 3 && z < zc("C6");
    const oesophagus = z > zc("C6") - 6;
    const thyroid = z > zc("C6") && z < zc("T1") + 10;
    const lung = Math.max(0, z - zc("T1") + 5) * 1.3;
    const base = zi * g.X * g.Y;
    for (let yi = 0; yi < g.Y; yi++) {
      const y = g.y0 + yi * g.px;
      for (let xi = 0; xi < g.X; xi++) {
        const x = g.x0 + xi * g.px;
        const i = base + yi * g.X + xi;
        const dx = x - ocx, dy = y - ocy;
        let v = HU.air;
        if (inEllipse(dx, dy, a, b)) {
          v = inEllipse(dx, dy, a - p.fat, b - p.fat * 0.8) ? HU.muscle : HU.fat;
          if (v === HU.muscle) {
            for (const [wx, wy, wz, ph, amp] of waves) v += amp * Math.sin(wx * x + wy * y + wz * z + ph);
            // Fat planes between the muscle groups of the anterior triangle.
            const side = Math.abs(x - sx);
            if (
              inEllipse(side - a * 0.55, y - (sy - 8 * k), 9 * k, 15 * k) &&
              !inEllipse(side - a * 0.55, y - (sy - 8 * k), 7 * k, 13 * k)
            ) v = HU.fat;
            if (inEllipse(side - 24 * k, y - (sy - 10 * k), 5 * k, 4 * k)) v = HU.vessel;
          }
          const ax = x - sx, ay = y - acy;
          if (larynx && inEllipse(ax, ay, aa + 4 * k, ab + 5 * k)) v = HU.cartilage;
          if (thyroid && inEllipse(Math.abs(ax) - 14 * k, ay + 2, 7 * k, 9 * k)) v = HU.thyroid;
          if (oesophagus && inEllipse(ax + 3, y - (sy - 9 * k - 5 * k), 7 * k, 4 * k)) v = HU.vessel - 5;
          if (z > zc("C1") - 25 && inEllipse(ax, ay, aa, ab)) v = HU.air;
          if (
            lung > 0 &&
            inEllipse(Math.abs(ax) - 42 * k, y - sy, Math.min(lung, 32 * k), Math.min(lung, 30 * k))
          ) {
            v = HU.lung;
          }
        } else if (y > tableY) {
          const t = y - tableY;
          v = t < 3 || (t > 14 && t < 17) ? 250 : t < 14 ? -600 : HU.air;
        }
        hu[i] = v;
      }
    }
  }
}

function transpose(m: Mat3): Mat3 {
  return [m[0], m[3], m[6], m[1], m[4], m[7], m[2], m[5], m[8]];
}

/** Voxel index ranges covering a local box placed in the world by (origin, rot, scale). */
function voxelRange(
  b: Bounds,
  origin: Vec3,
  rot: Mat3,
  scale: number,
  g: Grid,
): [number, number, number, number, number, number] | null {
  const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (let c = 0; c < 8; c++) {
    const q = [b[c & 1 ? 1 : 0][0], b[c & 2 ? 1 : 0][1], b[c & 4 ? 1 : 0][2]];
    for (let a = 0; a < 3; a++) {
      const w = origin[a] + scale * (rot[3 * a] * q[0] + rot[3 * a + 1] * q[1] + rot[3 * a + 2] * q[2]);
      lo[a] = Math.min(lo[a], w);
      hi[a] = Math.max(hi[a], w);
    }
  }
  const i0 = Math.max(0, Math.floor((lo[0] - g.x0) / g.px)),
    i1 = Math.min(g.X - 1, Math.ceil((hi[0] - g.x0) / g.px));
  const j0 = Math.max(0, Math.floor((lo[1] - g.y0) / g.px)),
    j1 = Math.min(g.Y - 1, Math.ceil((hi[1] - g.y0) / g.px));
  const k0 = Math.max(0, Math.floor((lo[2] - g.z0) / g.dz)),
    k1 = Math.min(g.Z - 1, Math.ceil((hi[2] - g.z0) / g.dz));
  if (i0 > i1 || j0 > j1 || k0 > k1) return null;
  return [i0, i1, j0, j1, k0, k1];
}

/**
 * Visits every voxel of a placed local box with its local coordinates: `fn(index, qx, qy, qz)`.
 */
function forEachLocal(
  b: Bounds,
  f: { origin: Vec3; rot: Mat3; scale: number },
  g: Grid,
  fn: (i: number, x: number, y: number, z: number) => void,
): void {
  const range = voxelRange(b, f.origin, f.rot, f.scale, g);
  if (!range) return;
  const [i0, i1, j0, j1, k0, k1] = range;
  const t = transpose(f.rot), inv = 1 / f.scale;
  for (let kk = k0; kk <= k1; kk++) {
    const wz = g.z0 + kk * g.dz - f.origin[2];
    for (let jj = j0; jj <= j1; jj++) {
      const wy = g.y0 + jj * g.px - f.origin[1];
      for (let ii = i0; ii <= i1; ii++) {
        const wx = g.x0 + ii * g.px - f.origin[0];
        const qx = (t[0] * wx + t[1] * wy + t[2] * wz) * inv;
        const qy = (t[3] * wx + t[4] * wy + t[5] * wz) * inv;
        const qz = (t[6] * wx + t[7] * wy + t[8] * wz) * inv;
        fn((kk * g.Y + jj) * g.X + ii, qx, qy, qz);
      }
    }
  }
}

/** Discs between the bodies, and the canal (CSF) around the cord. */
export function renderSpineSoft(soft: SpineSoft[], g: Grid, hu: Float32Array): void {
  for (const s of soft) {
    const c = s.canal;
    forEachLocal([[-c.hw, c.y - c.hd, c.z0], [c.hw, c.y + c.hd, c.z1]], s, g, (i, x, y, z) => {
      if (z < c.z0 || z > c.z1) return;
      const e = (x * x) / (c.hw * c.hw) + ((y - c.y) ** 2) / (c.hd * c.hd);
      if (e < 1) hu[i] = e < 0.3 ? HU.cord : HU.csf;
    });
    const d = s.disc;
    if (!d) continue;
    forEachLocal([[-d.hw, -d.hd, d.z0], [d.hw, d.hd, d.z1]], s, g, (i, x, y, z) => {
      if (z < d.z0 || z > d.z1) return;
      const u = Math.abs(x) / d.hw, v = Math.abs(y) / d.hd;
      if (u ** 2.5 + v ** 2.5 < 1) hu[i] = HU.disc;
    });
  }
}

/** A group's signed distances (labelled bone, and unlabelled bone such as ribs) at a local point. */
function groupSdf(group: BoneGroup): (x: number, y: number, z: number) => [number, number] {
  const margin = 4;
  const near = (b: Bounds, x: number, y: number, z: number) =>
    x > b[0][0] - margin && x < b[1][0] + margin && y > b[0][1] - margin && y < b[1][1] + margin &&
    z > b[0][2] - margin && z < b[1][2] + margin;
  const labelled = group.label ? group.parts.filter((p) => !p.name.startsWith("rib:")) : [];
  const other = group.label ? group.parts.filter((p) => p.name.startsWith("rib:")) : group.parts;
  const union = (parts: typeof labelled) => (x: number, y: number, z: number) => {
    let d = Infinity;
    for (const p of parts) if (near(p.shape.bounds, x, y, z)) d = Math.min(d, p.shape.sdf(x, y, z));
    return d === Infinity ? margin : d;
  };
  let lab = union(labelled);
  for (const f of group.fractures) if (f.kind === "break") lab = brokenSdf(lab, f);
  const oth = union(other);
  return (x, y, z) => [labelled.length ? lab(x, y, z) : Infinity, other.length ? oth(x, y, z) : Infinity];
}

/**
 * Bones: partial volume over one voxel at the surface, a cortical shell over cancellous bone. A voxel whose
 * centre is inside a labelled group's bone takes its label (the deepest one where two touch).
 */
export function renderBones(layout: Layout, g: Grid, hu: Float32Array, labels: Uint8Array): void {
  const p = layout.patient;
  const depth = new Float32Array(labels.length).fill(Infinity);
  for (const group of layout.groups) {
    const sdf = groupSdf(group);
    const b = unionBounds(group.parts.map((x) => x.shape), 4);
    forEachLocal(b, group, g, (i, x, y, z) => {
      const [dl, dother] = sdf(x, y, z);
      const d = Math.min(dl, dother) * group.scale;
      if (d > g.px) return;
      const f = Math.max(0, Math.min(1, 0.5 - d / g.px));
      const bone = -d < CORTEX ? p.cortical : p.cancellous;
      hu[i] += f * (bone - hu[i]);
      if (group.label && dl * group.scale < 0 && dl * group.scale < depth[i]) {
        depth[i] = dl * group.scale;
        labels[i] = group.label;
      }
    });
  }
}

/** Separable Gaussian blur in place along one axis (stride `s`, length `n`, `count` lines). */
function blurAxis(v: Float32Array, g: Grid, axis: 0 | 1 | 2, sigma: number): void {
  if (sigma <= 0.05) return;
  const rad = Math.max(1, Math.ceil(2.5 * sigma));
  const w = Array.from({ length: 2 * rad + 1 }, (_, t) => Math.exp(-((t - rad) ** 2) / (2 * sigma * sigma)));
  const sum = w.reduce((a, b) => a + b, 0);
  for (let t = 0; t < w.length; t++) w[t] /= sum;
  const dims = [g.X, g.Y, g.Z], strides = [1, g.X, g.X * g.Y];
  const n = dims[axis], s = strides[axis];
  const line = new Float32Array(n);
  const others = axis === 0
    ? [[g.Y, g.X], [g.Z, g.X * g.Y]]
    : axis === 1
    ? [[g.X, 1], [g.Z, g.X * g.Y]]
    : [[g.X, 1], [g.Y, g.X]];
  for (let a = 0; a < others[0][0]; a++) {
    for (let b = 0; b < others[1][0]; b++) {
      const o = a * others[0][1] + b * others[1][1];
      for (let t = 0; t < n; t++) line[t] = v[o + t * s];
      for (let t = 0; t < n; t++) {
        let acc = 0;
        for (let q = -rad; q <= rad; q++) acc += w[q + rad] * line[Math.max(0, Math.min(n - 1, t + q))];
        v[o + t * s] = acc;
      }
    }
  }
}

/**
 * The scanner: the reconstruction kernel's blur (in plane, and the slice profile along z), quantum noise,
 * rounding to int16 and the padding value -2000 outside the circular field of view.
 */
export function scan(hu: Float32Array, g: Grid, blur: number, noise: number, r: () => number): Int16Array {
  blurAxis(hu, g, 0, blur);
  blurAxis(hu, g, 1, blur);
  blurAxis(hu, g, 2, 0.35 * 1.25 / g.dz);
  const out = new Int16Array(hu.length);
  const R2 = (g.X / 2) ** 2;
  for (let k = 0; k < g.Z; k++) {
    for (let j = 0; j < g.Y; j++) {
      for (let i = 0; i < g.X; i++) {
        const idx = (k * g.Y + j) * g.X + i;
        if ((i - g.X / 2 + 0.5) ** 2 + (j - g.Y / 2 + 0.5) ** 2 > R2) {
          out[idx] = -2000;
          continue;
        }
        out[idx] = Math.max(-1024, Math.min(3071, Math.round(hu[idx] + noise * gauss(r))));
      }
    }
  }
  return out;
}

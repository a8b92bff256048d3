/**
 * @file Fractures as a radiologist sees them on CT: a break (a plane through a part of a vertebra that opens
 * the cortex with a gap of soft-tissue density, the fragment beyond it shifted when the break goes through
 * the whole part) or a compression (the body's top endplate wedged down anteriorly). Where in the neck and
 * where in a vertebra follow the RSNA 2022 training set's frequencies: C7 and C2 most often, then C6, C5, C1.
 */
import { BODY, type Part } from "./anatomy.ts";
import { body, type Vec3 } from "./shapes.ts";

/** One fracture, in its vertebra's frame (mm). */
export interface Fracture {
  level: number;
  kind: "break" | "compression";
  /** The part it goes through ("body", "dens", "lamina L", ...). */
  part: string;
  point: Vec3;
  normal: Vec3;
  /** Width of the gap (mm). */
  gap: number;
  /** Displacement of the fragment on the normal's side (mm; zero for an incomplete crack). */
  shift: Vec3;
  /** The break spans this distance from `point` (mm). */
  radius: number;
  /** Compression: the fraction of the body's height lost anteriorly. */
  wedge: number;
}

/** Relative frequency of a fracture at C1..C7 among fractured levels (RSNA 2022 training labels). */
export const LEVEL_WEIGHTS = [0.08, 0.2, 0.05, 0.07, 0.12, 0.2, 0.28];

/** Parts that break, per level (by part-name prefix), with a weight each. */
function candidates(level: number): [string, number][] {
  if (level === 1) return [["anterior arch", 3], ["posterior arch", 3], ["lateral mass", 2]];
  if (level === 2) return [["dens", 4], ["pedicle", 3], ["body", 2], ["lamina", 1]];
  const common: [string, number][] = [["body", 4], ["pedicle", 1.5], ["lamina", 2], ["pillar", 1.5], [
    "transverse process",
    1,
  ]];
  if (level >= 6) common.push(["spinous process", 1.5]);
  return common;
}

function pick<T>(items: [T, number][], r: () => number): T {
  const total = items.reduce((s, [, w]) => s + w, 0);
  let u = r() * total;
  for (const [v, w] of items) if ((u -= w) < 0) return v;
  return items[items.length - 1][0];
}

function unit(v: Vec3): Vec3 {
  const n = Math.hypot(v[0], v[1], v[2]) || 1;
  return [v[0] / n, v[1] / n, v[2] / n];
}

/** Which levels (1..7) of a positive study are fractured: one, sometimes two or three. */
export function drawLevels(r: () => number): number[] {
  const n = 1 + (r() < 0.3 ? 1 : 0) + (r() < 0.08 ? 1 : 0);
  const out = new Set<number>();
  while (out.size < n) out.add(1 + pick(LEVEL_WEIGHTS.map((w, i) => [i, w] as [number, number]), r));
  return [...out].sort();
}

/**
 * Draws a fracture of vertebra `level` whose parts are `parts`. `severity` in [0, 1] scales the gap and the
 * displacement from subtle (0.6 mm, no shift) to obvious (3.5 mm, 2.5 mm).
 */
export function drawFracture(level: number, parts: Part[], r: () => number): Fracture {
  const prefix = pick(candidates(level), r);
  const options = parts.filter((p) => p.name.startsWith(prefix));
  const part = options[Math.floor(r() * options.length)];
  const [lo, hi] = part.shape.bounds;
  const c: Vec3 = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2];
  const half = Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2;
  const severity = r();
  const gap = 0.6 + 2.9 * severity * (0.6 + 0.4 * r());
  const name = `C${level}`;
  if (prefix === "body" && level >= 3 && r() < 0.35) {
    return {
      level,
      kind: "compression",
      part: "body",
      point: c,
      normal: [0, 0, 1],
      gap: 0,
      shift: [0, 0, 0],
      radius: 0,
      wedge: 0.18 + 0.3 * severity,
    };
  }
  let point = c, normal: Vec3, radius = half + 2, complete = true;
  if (prefix === "body") {
    // A crack entering through the anterior or lateral cortex, through part of the body.
    const d = BODY[name] ?? BODY.C3;
    const side = r() < 0.6 ? 0 : (r() < 0.5 ? -1 : 1);
    point = side === 0
      ? [(r() - 0.5) * d.hw, -d.hd, (r() - 0.5) * d.hh]
      : [side * d.hw, (r() - 0.5) * d.hd, (r() - 0.5) * d.hh];
    normal = unit([r() - 0.5, r() - 0.5, (r() - 0.5) * 2]);
    radius = 5 + r() * 7;
    complete = false;
  } else if (prefix === "dens") {
    // Type II: through the base of the dens.
    point = [0, -1, -(BODY.C2.hh + 2 + r() * 4)];
    normal = unit([(r() - 0.5) * 0.4, (r() - 0.5) * 0.6, 1]);
    radius = 8;
  } else {
    normal = unit([r() - 0.5, r() - 0.5, r() - 0.5]);
    point = [c[0] + (r() - 0.5) * (hi[0] - lo[0]) * 0.4, c[1] + (r() - 0.5) * (hi[1] - lo[1]) * 0.4, c[2]];
  }
  const s = complete ? 2.5 * severity * r() : 0;
  const dir = unit([r() - 0.5, r() - 0.5, r() - 0.5]);
  return {
    level,
    kind: "break",
    part: part.name,
    point,
    normal,
    gap,
    shift: [dir[0] * s, dir[1] * s, dir[2] * s],
    radius,
    wedge: 0,
  };
}

/** The parts of a vertebra with a compression applied (its body wedged); other fractures act at render time. */
export function applyCompression(level: number, parts: Part[], f: Fracture): Part[] {
  if (f.kind !== "compression") return parts;
  const d = BODY[`C${level}`];
  return parts.map((p) =>
    p.name === "body" ? { name: p.name, shape: body([0, 0, 0], d.hw, d.hd, d.hh, 2.5, f.wedge) } : p
  );
}

/**
 * The signed distance of a vertebra with a break: inside the break's reach, the fragment on the normal's side
 * is moved by `shift` and a slab of width `gap` around the plane is cut out. `intact` is the vertebra's own
 * distance function.
 */
export function brokenSdf(
  intact: (x: number, y: number, z: number) => number,
  f: Fracture,
): (x: number, y: number, z: number) => number {
  const [px, py, pz] = f.point, [nx, ny, nz] = f.normal, [sx, sy, sz] = f.shift, half = f.gap / 2;
  return (x, y, z) => {
    const rx = x - px, ry = y - py, rz = z - pz;
    if (rx * rx + ry * ry + rz * rz > f.radius * f.radius) return intact(x, y, z);
    const s = rx * nx + ry * ny + rz * nz;
    const d = s > 0 ? intact(x - sx, y - sy, z - sz) : intact(x, y, z);
    return Math.max(d, half - Math.abs(s));
  };
}

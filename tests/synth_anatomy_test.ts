/**
 * The phantoms' anatomy, part by part: levels in order down the neck, the atlas without a body around the
 * axis' dens, bodies growing caudally, C7's long spinous process, T1 labelled above 7 with the first ribs
 * beside it, unlabelled mandible in front of the spine, fractures that open the cortex of the level they
 * are drawn on and nothing else, compressions that wedge a body, and the levels' fracture frequencies.
 */
import { type PhantomStudy, phantomStudy } from "../data/synth.ts";
import { drawFracture, drawLevels } from "../data/synth/fracture.ts";
import { atlas, axis, subaxial } from "../data/synth/anatomy.ts";
import { prng } from "./helpers.ts";

const cache = new Map<string, PhantomStudy>();
function study(seed: number, fractures = true): PhantomStudy {
  const k = `${seed}:${fractures}`;
  if (!cache.has(k)) cache.set(k, phantomStudy(seed, 128, { fractures, positiveFraction: 0.9 }));
  return cache.get(k)!;
}

/** Per label: voxel count, centroid [z, y, x] in mm and the y (posterior) extent in mm. */
function labelStats(st: PhantomStudy) {
  const [Z, Y, X] = st.shape, [dz, py] = st.spacing;
  const out = Array.from({ length: 10 }, () => ({ n: 0, z: 0, y: 0, x: 0, yMax: -Infinity }));
  for (let z = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        const l = st.labels[(z * Y + y) * X + x];
        if (!l) continue;
        const s = out[l];
        s.n++;
        s.z += z * dz;
        s.y += y * py;
        s.x += x * py;
        s.yMax = Math.max(s.yMax, y * py);
      }
    }
  }
  for (const s of out) if (s.n) (s.z /= s.n), (s.y /= s.n), (s.x /= s.n);
  return out;
}

const SEEDS = [11, 12, 13];

Deno.test("phantom anatomy: levels in order, atlas ring around the dens, growing bodies, C7's spinous process", () => {
  for (const seed of SEEDS) {
    const st = study(seed, false);
    const s = labelStats(st);
    const [, Y, X] = st.shape, [dz, px] = st.spacing;
    for (let v = 3; v <= 7; v++) {
      if (!(s[v].z > s[v - 1].z + 8)) throw new Error(`seed ${seed}: C${v} is not below C${v - 1}`);
    }
    // C1 has no body: its centre (the ring's) holds the dens of C2, labelled 2, at C1's own height.
    const [cz, cy, cx] = st.centres.C1.map(Math.round);
    if (cz >= 0) {
      const at = st.labels[(cz * Y + cy) * X + cx];
      if (at !== 2) {
        throw new Error(`seed ${seed}: the atlas ring's centre is labelled ${at}, not the dens (2)`);
      }
    }
    // Bodies grow caudally: the width of the labelled body through its centre.
    const width = (name: string) => {
      const [z, y, x] = st.centres[name].map(Math.round);
      let n = 0;
      for (let d = -20; d <= 20; d++) if (st.labels[(z * Y + y) * X + x + d] === Number(name[1])) n++;
      return n * px;
    };
    if (!(width("C3") < width("C6") && width("C6") < width("C7") + px)) {
      throw new Error(`seed ${seed}: body widths C3 ${width("C3")}, C6 ${width("C6")}, C7 ${width("C7")} mm`);
    }
    // C7's spinous process reaches further back than C6's (about 11 mm longer).
    const back = (v: number) => s[v].yMax - st.centres[`C${v}`][1] * px;
    if (!(back(7) > back(6) + 5)) {
      throw new Error(`seed ${seed}: C7 reaches ${back(7)} mm back, C6 ${back(6)}`);
    }
    if (st.centres.T1[0] * dz + 4 < st.shape[0] * dz && !s[8].n) {
      throw new Error(`seed ${seed}: T1 is in the scan but carries no label 8`);
    }
    if (s.some((x, l) => l > 9 && x.n)) throw new Error("labels above 9");
  }
});

Deno.test("phantom anatomy: T1 labelled 8 with unlabelled first ribs; unlabelled mandible in front", () => {
  // A scan that reaches the thorax: find one among the seeds.
  let found = false;
  for (let seed = 20; seed < 30 && !found; seed++) {
    const st = study(seed, false);
    const [Z, Y, X] = st.shape, [, px] = st.spacing;
    const t1 = st.centres.T1.map(Math.round);
    if (t1[0] + 3 >= Z) continue;
    found = true;
    let t1n = 0, ribs = 0;
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++) {
        const i = (t1[0] * Y + y) * X + x;
        if (st.labels[i] === 8) t1n++;
        // Bone 35 mm or more to the side of T1's centre is rib, and unlabelled.
        if (Math.abs(x - t1[2]) * px > 35 && st.hu[i] > 400 && !st.labels[i]) ribs++;
      }
    }
    if (t1n < 50) throw new Error(`seed ${seed}: ${t1n} voxels labelled 8 in T1's centre slice`);
    if (ribs < 5) throw new Error(`seed ${seed}: no first ribs beside T1`);
  }
  if (!found) throw new Error("no seed in 20..29 scans T1");
  const st = study(11, false);
  const [, Y, X] = st.shape, [, px] = st.spacing;
  const c2 = st.centres.C2.map(Math.round);
  let jaw = 0;
  for (let z = c2[0]; z < c2[0] + 15 / st.spacing[0]; z++) {
    for (let y = 0; y < c2[1] - Math.round(30 / px); y++) {
      for (let x = 0; x < X; x++) {
        const i = (z * Y + y) * X + x;
        if (st.hu[i] > 500) {
          if (st.labels[i]) throw new Error(`labelled bone ${st.labels[i]} 30 mm in front of C2`);
          jaw++;
        }
      }
    }
  }
  if (jaw < 20) throw new Error(`no mandible in front of C2/C3 (${jaw} bone voxels)`);
});

Deno.test("phantom fractures open the cortex of their level only; compressions wedge the body", () => {
  let breaks = 0, compressions = 0;
  for (let seed = 100; seed < 160 && (breaks < 2 || compressions < 1); seed++) {
    const probe = phantomStudy(seed, 32, { positiveFraction: 0.9, thickness: [3] });
    const kinds = probe.fractures.map((f) => f.kind);
    if (!kinds.length || (kinds.includes("break") ? breaks >= 2 : compressions >= 1)) continue;
    const a = phantomStudy(seed, 96, { positiveFraction: 0.9 });
    const b = phantomStudy(seed, 96, { positiveFraction: 0.9, fractures: false });
    const levels = new Set(a.fractures.map((f) => f.level));
    const opened = new Array(10).fill(0);
    for (let i = 0; i < a.hu.length; i++) {
      if (a.hu[i] === b.hu[i]) continue;
      const l = b.labels[i] || a.labels[i];
      // A changed voxel belongs to, or touches, a fractured level.
      if (l && !levels.has(l)) {
        throw new Error(`seed ${seed}: C${l} changed but only ${[...levels]} fractured`);
      }
      if (l && b.hu[i] - a.hu[i] > 150) opened[l]++;
    }
    for (const f of a.fractures) {
      if (f.kind === "break" && !opened[f.level]) {
        throw new Error(`seed ${seed}: the break of C${f.level} (${f.part}) opened no bone`);
      }
      if (f.kind === "compression") {
        const n = (st: PhantomStudy) => st.labels.reduce((s, l) => s + (l === f.level ? 1 : 0), 0);
        if (!(n(a) < n(b) * 0.97)) {
          throw new Error(`seed ${seed}: compression of C${f.level} kept its volume`);
        }
      }
    }
    breaks += a.fractures.filter((f) => f.kind === "break").length;
    compressions += a.fractures.filter((f) => f.kind === "compression").length;
    if (a.fractured.join() === "0,0,0,0,0,0,0") throw new Error(`seed ${seed}: fractures but no label`);
  }
  if (breaks < 2 || compressions < 1) throw new Error(`found ${breaks} breaks, ${compressions} compressions`);
});

Deno.test("phantom fractures: C7 and C2 the most often; every level's parts can break", () => {
  const r = prng(5);
  const count = new Array(8).fill(0);
  for (let i = 0; i < 4000; i++) for (const l of drawLevels(r)) count[l]++;
  const order = count.map((n, l) => [n, l]).slice(1).sort((a, b) => b[0] - a[0]).map(([, l]) => l);
  if (order[0] !== 7 || !(order[1] === 2 || order[1] === 6)) throw new Error(`level counts ${count}`);
  const partsOf = (l: number) => (l === 1 ? atlas() : l === 2 ? axis() : subaxial(`C${l}`));
  for (let l = 1; l <= 7; l++) {
    const names = new Set<string>();
    for (let i = 0; i < 200; i++) names.add(drawFracture(l, partsOf(l), r).part);
    if (names.size < 3) throw new Error(`C${l}: only ${[...names]} break`);
  }
});

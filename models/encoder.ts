/**
 * @file Encoder names as the seed writes them: "r50ir", "r152ip", ...
 */

/** Depth and bottleneck of an encoder name like "r152ir". */
export function parseEncoder(name: string): { depth: 26 | 50 | 101 | 152; bottleneck: "ir" | "ip" } {
  const m = /^r(26|50|101|152)(ir|ip)$/.exec(name);
  if (!m) throw new Error(`unknown encoder "${name}" (expected r26ir, r50ir, r101ip, r152ir, r152ip, ...)`);
  return { depth: Number(m[1]) as 26 | 50 | 101 | 152, bottleneck: m[2] as "ir" | "ip" };
}

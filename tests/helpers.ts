/**
 * @file Test helpers: a seeded PRNG, a batch runner that asks PyTorch (Debian's python3-torch) for reference
 * values, and tolerance checks.
 */
import type { Tensor } from "../mod.ts";

/** mulberry32: deterministic floats in [0, 1) (the phantom generator's). */
export { rng as prng } from "../data/synth.ts";

/** `n` values uniform in [lo, hi), rounded to f32. */
export function randData(rng: () => number, n: number, lo = -2, hi = 2): number[] {
  return Array.from({ length: n }, () => Math.fround(lo + (hi - lo) * rng()));
}

/** Input spec sent to PyTorch. */
export interface RefInput {
  data: number[];
  shape: number[];
  dtype: "f32" | "i32" | "u8";
  grad?: boolean;
}

/** One case for `tests/torch_ref.py`. */
export interface RefCase {
  expr: string;
  inputs: RefInput[];
  grad_out?: { data: number[]; shape: number[] } | null;
}

/** PyTorch's answer for one case. */
export interface RefResult {
  out: { data: number[]; shape: number[]; dtype: string };
  grads: (number[] | null)[];
  error?: string;
}

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";

/** Runs all cases through PyTorch in one process. */
export async function torchRef(cases: RefCase[]): Promise<RefResult[]> {
  const script = new URL("./torch_ref.py", import.meta.url).pathname;
  const cmd = new Deno.Command(PY, { args: [script], stdin: "piped", stdout: "piped", stderr: "piped" });
  const p = cmd.spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(cases)));
  await w.close();
  const o = await p.output();
  if (!o.success) {
    throw new Error(
      `torch_ref.py failed (is python3-torch installed?):\n${new TextDecoder().decode(o.stderr)}`,
    );
  }
  return JSON.parse(new TextDecoder().decode(o.stdout));
}

/** Throws unless |a - b| <= atol + rtol * |b| elementwise (NaN must match NaN). */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
  rtol = 1e-4,
  atol?: number,
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    if (Number.isFinite(expected[i])) scale = Math.max(scale, Math.abs(expected[i]));
  }
  const at = atol ?? 1e-5 * Math.max(1, scale);
  let worst = -1, worstErr = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!Number.isFinite(e) && a === e) continue;
    const err = Math.abs(a - e) - (at + rtol * Math.abs(e));
    if (!(err <= 0) && (worst < 0 || err > worstErr || Number.isNaN(err))) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: mismatch at ${worst}: got ${actual[worst]}, expected ${
        expected[worst]
      } (rtol ${rtol}, atol ${at})`,
    );
  }
}

/** max |a - b| / max |b|: a measured error against a reference's scale. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0, s = 0;
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i] - b[i])), s = Math.max(s, Math.abs(b[i]));
  return e / s;
}

/** Shapes equal. */
export function assertShape(t: Tensor, shape: readonly number[], what: string): void {
  if (t.shape.join() !== shape.join()) throw new Error(`${what}: shape [${t.shape}] != expected [${shape}]`);
}

/** Awaits `p` and throws unless it rejects with a message containing every part. */
export async function assertRejectsWith(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    const m = (e as Error).message;
    for (const s of parts) if (!m.includes(s)) throw new Error(`"${m}" lacks "${s}"`);
    return;
  }
  throw new Error(`no error (${parts.join(", ")})`);
}

/** Throws unless `f` throws synchronously with a message containing every part. */
export function assertThrows(f: () => unknown, ...parts: string[]): void {
  try {
    f();
  } catch (e) {
    const m = (e as Error).message;
    for (const s of parts) if (!m.includes(s)) throw new Error(`"${m}" lacks "${s}"`);
    return;
  }
  throw new Error(`no error (${parts.join(", ")})`);
}

/** Runs a Python fixture script of tests/ with `req` as JSON on stdin; returns its JSON stdout. */
export async function pyFixture(script: string, req: unknown): Promise<any> {
  const path = new URL(`./${script}`, import.meta.url).pathname;
  const p = new Deno.Command(PY, { args: [path], stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(req)));
  await w.close();
  const o = await p.output();
  if (!o.success) throw new Error(`${script} failed:\n${new TextDecoder().decode(o.stderr)}`);
  return JSON.parse(new TextDecoder().decode(o.stdout));
}

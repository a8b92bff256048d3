/**
 * @file Tensor factories computed on the GPU: constants, ranges and seeded random numbers. Random values come
 * from a counter-based hash (PCG) of (seed, element index), so a seed gives the same tensor on every device
 * and no state is kept between calls.
 */
import { checkShape, Tensor, type TensorOptions } from "../core/tensor.ts";
import type { DType } from "../core/dtype.ts";
import { launch1d, params } from "./codegen.ts";

function fill(op: string, shape: readonly number[], value: number, opts: TensorOptions): Tensor {
  if (!opts?.device) throw new Error(`${op}: options.device is required (there is no global device)`);
  const dtype: DType = opts.dtype ?? "f32";
  if (dtype === "f16") throw new Error(`${op}: dtype f16 is not supported yet`);
  const t = Tensor.empty(opts.device, checkShape(shape, op), dtype, op);
  const words = Math.ceil(t.numel() * (dtype === "u8" ? 1 : 4) / 4);
  const ty = dtype === "f32" ? "f32" : dtype === "i32" ? "i32" : "u32";
  const v = dtype === "f32" ? "pf(0u)" : dtype === "i32" ? "pi(0u)" : "(pu(0u) & 255u) * 0x01010101u";
  launch1d({
    op,
    args: [{ name: "out", t, write: true }],
    n: words,
    params: params(dtype === "f32" ? { f: value } : value),
    key: "fill",
    body: () => `  ${dtype === "u8" ? "out_stw" : "out_st"}(gid, ${ty}(${v}));`,
  });
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

/** A tensor filled with `value`. */
export function full(shape: readonly number[], value: number, opts: TensorOptions): Tensor {
  return fill("full", shape, value, opts);
}

/** A tensor of zeros. */
export function zeros(shape: readonly number[], opts: TensorOptions): Tensor {
  return fill("zeros", shape, 0, opts);
}

/** A tensor of ones. */
export function ones(shape: readonly number[], opts: TensorOptions): Tensor {
  return fill("ones", shape, 1, opts);
}

/** Zeros with the shape, dtype and device of `t`. */
export function zerosLike(t: Tensor): Tensor {
  return fill("zerosLike", t.shape, 0, { device: t.device, dtype: t.dtype });
}

/** Ones with the shape, dtype and device of `t`. */
export function onesLike(t: Tensor): Tensor {
  return fill("onesLike", t.shape, 1, { device: t.device, dtype: t.dtype });
}

/** 0, 1, ..., n-1 (f32 or i32). */
export function arange(n: number, opts: TensorOptions): Tensor {
  const dtype = opts.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "i32") throw new Error(`arange: dtype must be f32 or i32, not ${dtype}`);
  const t = Tensor.empty(opts.device, checkShape([n], "arange"), dtype, "arange");
  launch1d({
    op: "arange",
    args: [{ name: "out", t, write: true }],
    n,
    body: `  out_st(gid, ${dtype}(gid));`,
  });
  return t;
}

/** WGSL of the counter-based generator: `rnd_u32(i, seed, stream)` and `rnd_f32` in [0, 1). */
export const RNG_WGSL = `fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
fn rnd_u32(i: u32, seed: u32, stream: u32) -> u32 { return pcg(pcg(i + pcg(seed ^ (stream * 0x9e3779b9u))) ^ seed); }
fn rnd_f32(i: u32, seed: u32, stream: u32) -> f32 { return f32(rnd_u32(i, seed, stream) >> 8u) * (1.0 / 16777216.0); }`;

/** Options of the random factories. */
export interface RandomOptions extends TensorOptions {
  /** 32-bit seed; the same seed gives the same values. Random when omitted. */
  seed?: number;
}

function seedOf(opts: RandomOptions): number {
  return (opts.seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
}

/** Uniform values in [low, high) (default [0, 1)). */
export function rand(
  shape: readonly number[],
  opts: RandomOptions & { low?: number; high?: number },
): Tensor {
  const op = "rand";
  if (!opts?.device) throw new Error(`${op}: options.device is required`);
  const t = Tensor.empty(opts.device, checkShape(shape, op), "f32", op);
  const lo = opts.low ?? 0, hi = opts.high ?? 1;
  launch1d({
    op,
    args: [{ name: "out", t, write: true }],
    n: t.numel(),
    params: params(seedOf(opts), { f: lo }, { f: hi - lo }),
    decls: RNG_WGSL,
    body: `  out_st(gid, pf(1u) + pf(2u) * rnd_f32(gid, pu(0u), 0u));`,
  });
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

/** Normal values with `mean` and `std` (default 0, 1), by Box-Muller. */
export function randn(
  shape: readonly number[],
  opts: RandomOptions & { mean?: number; std?: number },
): Tensor {
  const op = "randn";
  if (!opts?.device) throw new Error(`${op}: options.device is required`);
  const t = Tensor.empty(opts.device, checkShape(shape, op), "f32", op);
  launch1d({
    op,
    args: [{ name: "out", t, write: true }],
    n: t.numel(),
    params: params(seedOf(opts), { f: opts.mean ?? 0 }, { f: opts.std ?? 1 }),
    decls: RNG_WGSL,
    body: `  let u1 = (f32(rnd_u32(gid, pu(0u), 1u) >> 8u) + 1.0) * (1.0 / 16777216.0);
  let u2 = rnd_f32(gid, pu(0u), 2u);
  out_st(gid, pf(1u) + pf(2u) * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));`,
  });
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

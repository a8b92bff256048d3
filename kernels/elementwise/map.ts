/**
 * @file The elementwise engine: NumPy/PyTorch broadcasting and the generic "map" kernel that every
 * elementwise op (kernels/elementwise/*.ts, and fused kernels elsewhere) is built on. One kernel is generated
 * per expression and broadcast pattern (not per shape): same-shape f32/i32 operands take a vec4 path;
 * broadcast operands get their index from collapsed sizes and strides passed as uniforms. Scalar operands travel in the params uniform, so `mul(x, lr)` does not
 * recompile when `lr` changes. Operands needing more storage bindings than the device has are split into
 * chunks. No autograd and no op tables here, so any kernel module may import it without a cycle.
 */
import { Tensor } from "../../core/tensor.ts";
import type { DType } from "../../core/dtype.ts";
import { storageBytes } from "../../core/dtype.ts";
import { type Arg, bindingsOf, launch1d, params, type Uniforms } from "../codegen.ts";

/** A tensor or a scalar broadcast to every element. */
export type Operand = Tensor | number;

/** Broadcast result shape of several shapes, or an error naming `op` and all shapes. */
export function broadcastShapes(op: string, ...shapes: (readonly number[])[]): number[] {
  const nd = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = new Array(nd).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const d = s[s.length - 1 - i];
      const k = nd - 1 - i;
      if (out[k] === 1) out[k] = d;
      else if (d !== 1 && d !== out[k]) {
        throw new Error(`${op}: shapes ${shapes.map((x) => `[${x}]`).join(" and ")} are not broadcastable`);
      }
    }
  }
  return out;
}

/**
 * WGSL statements computing `o<k>` (flat index into input k) from `i` (flat output index). Sizes and strides
 * go into `uni` (`dz<d>`, `st<k>_<d>`): only the merged rank and the broadcast pattern shape the code.
 */
function indexCode(
  outShape: readonly number[],
  inShapes: (readonly number[] | null)[],
  uni: Uniforms,
): string {
  const nd = outShape.length;
  // Per output dim, per input: broadcast flag. Drop size-1 output dims.
  type Dim = { size: number; b: boolean[] };
  let dims: Dim[] = [];
  for (let d = 0; d < nd; d++) {
    if (outShape[d] === 1) continue;
    dims.push({
      size: outShape[d],
      b: inShapes.map((s) => {
        if (!s) return false;
        const k = d - (nd - s.length);
        return k < 0 || s[k] === 1;
      }),
    });
  }
  // Merge adjacent dims with the same broadcast pattern.
  const merged: Dim[] = [];
  for (const dm of dims) {
    const last = merged[merged.length - 1];
    if (last && last.b.every((x, k) => x === dm.b[k])) last.size *= dm.size;
    else merged.push({ size: dm.size, b: [...dm.b] });
  }
  dims = merged;
  const lines: string[] = [];
  const active = inShapes.map((s, k) => (s ? k : -1)).filter((k) => k >= 0);
  for (const k of active) lines.push(`var o${k} = 0u;`);
  lines.push("var r = i;");
  const stride = inShapes.map(() => 1);
  for (let d = dims.length - 1; d >= 0; d--) {
    const dm = dims[d];
    const outer = d === 0;
    const terms = active.filter((k) => !dm.b[k]);
    if (terms.length === 0 && outer) break;
    if (!outer) uni[`dz${d}`] = { d: dm.size };
    lines.push(outer ? `{ let c = r;` : `{ let q = div_dz${d}(r); let c = r - q * sh.dz${d}; r = q;`);
    for (const k of terms) {
      if (stride[k] === 1) lines.push(`  o${k} = o${k} + c;`);
      else {
        uni[`st${k}_${d}`] = stride[k];
        lines.push(`  o${k} = o${k} + c * sh.st${k}_${d};`);
      }
    }
    lines.push("}");
    for (const k of terms) stride[k] *= dm.size;
  }
  return lines.join("\n");
}

/** Expression builder: operand expressions (already loaded) and the WGSL value type of the output lane. */
export type Expr = (v: string[], T: string) => string;

/** Options of {@link map}. */
export interface MapOptions {
  /** Extra WGSL helper functions used by the expression. */
  decls?: string;
  /** Allow the vec4 path (the expression must be valid for vec4 operands). */
  vec4?: boolean;
  /** Output shape, when it is larger than the operands' broadcast shape (broadcastTo). */
  outShape?: readonly number[];
  /** Type of scalar operands (default: the output's, or the first tensor's for u8 outputs). */
  scalarDtype?: "f32" | "i32";
}

/** Register type of a dtype's values: f16 storage is widened to f32 on load and rounded back on store. */
function wgslOf(dtype: DType): string {
  return dtype === "f32" || dtype === "f16" ? "f32" : dtype === "i32" ? "i32" : "u32";
}

/**
 * Runs an elementwise expression over broadcast operands and returns the new tensor. Scalars are typed as
 * `opts.scalarDtype` (default: the output's dtype). No autograd here; the op modules add it.
 */
export function map(
  op: string,
  operands: Operand[],
  outDtype: DType,
  expr: Expr,
  opts: MapOptions = {},
): Tensor {
  const tensors = operands.filter((x): x is Tensor => x instanceof Tensor);
  if (tensors.length === 0) throw new Error(`${op}: at least one operand must be a tensor`);
  const device = tensors[0].device;
  for (const t of tensors) {
    t.storage(op);
    if (t.device !== device) {
      throw new Error(
        `${op}: tensors are on different devices ("${device.info.label}" and "${t.device.info.label}"), ` +
          `shapes ${tensors.map((x) => `[${x.shape}]`).join(", ")}`,
      );
    }
  }
  let outShape = broadcastShapes(op, ...tensors.map((t) => t.shape));
  if (opts.outShape) {
    const want = [...opts.outShape];
    if (broadcastShapes(op, outShape, want).join() !== want.join()) {
      throw new Error(`${op}: cannot broadcast [${outShape}] to [${want}]`);
    }
    outShape = want;
  }
  const out = Tensor.empty(device, outShape, outDtype, op);
  const n = out.numel();
  if (n === 0) return out;
  // Scalars take the output's register type (f16 computes in f32); a u8 output takes the first tensor's.
  const scalarDtype = opts.scalarDtype ??
    (outDtype !== "u8" ? wgslOf(outDtype) as "f32" | "i32" : tensors[0].dtype === "i32" ? "i32" : "f32");
  const pvals: (number | { f: number })[] = [];
  const sameShape = tensors.every((t) => t.shape.join() === outShape.join());
  const windows = [out, ...tensors].reduce(
    (k, t) => k + Math.ceil(storageBytes(t.dtype, t.numel()) / device.bindingCap),
    0,
  );
  const fits = windows <= device.info.maxStorageBuffersPerShaderStage;
  const vec4 = fits && !!opts.vec4 && sameShape && n % 4 === 0 && outDtype !== "u8" &&
    tensors.every((t) => t.dtype !== "u8");
  const args: Arg[] = [{ name: "out", t: out, write: true, vec4 }];
  let ti = 0;
  const loads: string[] = [];
  const inShapes: (readonly number[] | null)[] = [];
  const T = vec4 ? `vec4<${wgslOf(outDtype)}>` : wgslOf(outDtype);
  for (const x of operands) {
    if (x instanceof Tensor) {
      const name = `x${ti++}`;
      args.push({ name, t: x, write: false, vec4 });
      const same = x.shape.join() === outShape.join();
      inShapes.push(same ? null : x.shape);
      const k = inShapes.length - 1;
      loads.push(`${name}_ld(${same ? "i" : `o${k}`})`);
    } else {
      const k = pvals.length;
      pvals.push(scalarDtype === "f32" ? { f: x } : x);
      const s = scalarDtype === "f32" ? `pf(${k}u)` : `pi(${k}u)`;
      loads.push(vec4 ? `vec4<${scalarDtype}>(${s})` : s);
      inShapes.push(null);
    }
  }
  const p = pvals.length ? params(...pvals) : undefined;
  const value = expr(loads, T);
  if (vec4) {
    const n4 = n / 4;
    const per = device.profile === "cpu" ? 4 : 1;
    launch1d({
      op,
      args,
      n: Math.ceil(n4 / per),
      params: p,
      decls: opts.decls,
      uniforms: { n4: n4 },
      body: `  for (var e = 0u; e < ${per}u; e = e + 1u) {
    let i = gid * ${per}u + e;
    if (i < sh.n4) { out_st(i, ${value}); }
  }`,
    });
    return out;
  }
  const uni: Uniforms = {};
  const idx = indexCode(outShape, inShapes, uni);
  const scalar = (o0: number, o1: number, ranged: Arg[]) => {
    const inner = `let i = base + e;
    if (i < sh.o1) {
      ${idx}
      let v = ${value};`;
    const start = o0 ? `sh.o0 + ` : "";
    const body = outDtype === "u8"
      ? `  let base = ${start}gid * 4u;
  var w = 0u;
  for (var e = 0u; e < 4u; e = e + 1u) {
    ${inner}
      w = w | ((u32(v) & 255u) << (e * 8u));
    }
  }
  if (base < sh.o1) { out_stw(base / 4u, w); }`
      : `  let base = ${start}gid * 4u;
  for (var e = 0u; e < 4u; e = e + 1u) {
    ${inner}
      out_st(i, v);
    }
  }`;
    launch1d({
      op,
      args: ranged,
      n: Math.ceil((o1 - o0) / 4),
      params: p,
      uniforms: { ...uni, o1, ...(o0 ? { o0 } : {}) },
      decls: opts.decls,
      body,
    });
  };
  if (fits) {
    scalar(0, n, args);
    return out;
  }
  // Too many windows for one dispatch: split the output into chunks. Operands with the output's shape are
  // bound only over the chunk's range; broadcast operands (bias-like, usually small) are bound whole.
  const limit = device.info.maxStorageBuffersPerShaderStage;
  const full = (a: Arg) => a.t.shape.join() === outShape.join();
  const fixed = args.filter((a) => !full(a)).reduce((k, a) => k + bindingsOf(a, device), 0);
  const split = args.filter(full).length;
  const per = Math.floor((limit - fixed) / split);
  if (per < 2) {
    throw new Error(
      `${op}: operands [${tensors.map((t) => `[${t.shape}]`).join(", ")}] need ${windows} storage bindings ` +
        `(binding cap ${device.bindingCap} B), more than the device's ${limit}, even when split`,
    );
  }
  // One window less than the budget leaves room for the 256-byte alignment of each range's start.
  const chunk = Math.floor(((per - 1) * device.bindingCap) / 4 / 256) * 256;
  const ranged = (a: Arg, lo: number, hi: number): Arg => {
    const eb = a.t.dtype === "u8" ? 1 : 4;
    const b0 = Math.floor((lo * eb) / 256) * 256;
    const b1 = Math.min(storageBytes(a.t.dtype, a.t.numel()), Math.ceil(((hi + 1) * eb) / 16) * 16);
    return { ...a, vec4: false, range: { byteOffset: b0, bytes: b1 - b0 } };
  };
  for (let o0 = 0; o0 < n; o0 += chunk) {
    const o1 = Math.min(n, o0 + chunk);
    scalar(o0, o1, args.map((a) => (full(a) ? ranged(a, o0, o1 - 1) : a)));
  }
  return out;
}

/** Throws unless every tensor operand is f32 (the float-only ops). */
export function requireFloat(op: string, ...xs: Operand[]): void {
  for (const x of xs) {
    if (x instanceof Tensor && x.dtype !== "f32") {
      throw new Error(`${op}: expects f32 tensors, got ${x.describe()} (use F.cast)`);
    }
  }
}

/** The common dtype of two operands (at least one a tensor), or an error naming `op`; u8 is refused. */
export function sameDtype(op: string, a: Operand, b: Operand): DType {
  const ta = a instanceof Tensor ? a : null;
  const tb = b instanceof Tensor ? b : null;
  if (ta && tb && ta.dtype !== tb.dtype) {
    throw new Error(`${op}: dtypes differ: ${ta.describe()} and ${tb.describe()} (use F.cast)`);
  }
  const dt = (ta ?? tb)!.dtype;
  if (dt === "u8") {
    throw new Error(`${op}: arithmetic on u8 tensors is not supported; cast to f32 or i32 first`);
  }
  return dt;
}

/** The tensor operand, or null for a scalar (autograd inputs). */
export function asT(x: Operand): Tensor | null {
  return x instanceof Tensor ? x : null;
}

/** Whether an op-table row's WGSL reads the value `name` (a whole word, e.g. `y` in `"g * y"`). */
export function reads(src: string, name: string): boolean {
  return new RegExp(`\\b${name}\\b`).test(src);
}

/**
 * Maps an op-table row's WGSL over the named values it reads, e.g. `"g * y"` over {g, x, y} binds g and y
 * only; `T` in the WGSL is the lane type (scalar or vec4). Values are tensors or scalars, as in {@link map}.
 */
export function mapRow(
  op: string,
  src: string,
  values: Record<string, Operand>,
  outDtype: DType,
  opts?: MapOptions,
): Tensor {
  const names = Object.keys(values).filter((k) => reads(src, k));
  return map(
    op,
    names.map((k) => values[k]),
    outDtype,
    (v, T) => fill(src, { T, ...Object.fromEntries(names.map((k, i) => [k, v[i]])) }),
    opts,
  );
}

/** Replaces the whole-word names of `src` found in `env` by their WGSL, in one pass (no rescanning). */
export function fill(src: string, env: Record<string, string>): string {
  return src.replace(/\b[A-Za-z_]\w*\b/g, (w) => (Object.hasOwn(env, w) ? env[w] : w));
}

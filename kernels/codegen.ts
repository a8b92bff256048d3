/**
 * @file WGSL generation shared by all kernels.
 *
 * A kernel is a small body of WGSL plus a list of tensor arguments. {@link launch} wraps the body in a
 * complete shader: one storage binding per tensor, accessor functions `x_ld(i)` / `x_st(i, v)`, a uniform
 * `pu(i)`/`pf(i)`/`pi(i)` for per-dispatch scalars, and a `main` that turns a 2-D dispatch grid back into a
 * linear workgroup index `wg` (so more than 65535 workgroups work). Shapes are baked in as constants;
 * pipelines are cached by source in the device.
 *
 * Tensors larger than one storage binding (the device's `bindingCap`) are bound as several consecutive
 * windows of the same buffer; the accessors pick the window from the index. Small tensors get direct array
 * accesses, so the common case pays nothing.
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { storageBytes, wgslScalar } from "../core/dtype.ts";

/** A tensor argument of a kernel. */
export interface Arg {
  /** WGSL identifier of the binding (accessors are `<name>_ld`, `<name>_st`, ...). */
  name: string;
  t: Tensor;
  /** Bound read-write. */
  write?: boolean;
  /** View f32/i32 data as vec4 elements (the tensor's storage is always a multiple of 16 bytes). */
  vec4?: boolean;
  /**
   * Bind only this byte range of the storage (offset a multiple of 256). Accessors still take indices into
   * the whole tensor; the range's start is subtracted. Used to split work that needs too many bindings.
   */
  range?: { byteOffset: number; bytes: number };
}

/** Everything {@link launch} needs. */
export interface LaunchSpec {
  /** Op name for errors and the shader label, e.g. "F.add". */
  op: string;
  args: Arg[];
  /** Workgroup size (1-D). */
  wg: number;
  /** Total number of workgroups (linear). */
  groups: number;
  /** Per-dispatch 32-bit words (up to 64), read with `pu/pf/pi`. */
  params?: Uint32Array;
  /** Extra declarations: constants, helper functions, workgroup variables. */
  decls?: string;
  /** The body of `main`; may use `wg` (linear workgroup index), `lid` and `gid` (= wg * WG + lid). */
  body: string;
}

/** Packs f32 and u32/i32 values into params words: numbers given as `{f: x}` are stored as f32 bits. */
export function params(...vals: (number | { f: number })[]): Uint32Array {
  const out = new Uint32Array(vals.length);
  const f = new Float32Array(out.buffer);
  const i = new Int32Array(out.buffer);
  vals.forEach((v, k) => {
    if (typeof v === "number") i[k] = v;
    else f[k] = v.f;
  });
  return out;
}

/** Formats a number as a WGSL u32 literal. */
export function u(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`codegen: ${n} is not a u32`);
  return `${n}u`;
}

/** Formats a number as a WGSL f32 literal. */
export function f(n: number): string {
  // Chromium's WGSL compiler rejects constant expressions that evaluate to inf/NaN (bitcast of a literal is
  // one; a function call is not a constant expression). `bits_f32` is declared in every kernel (see build).
  if (Number.isNaN(n)) return "bits_f32(0x7fc00000u)";
  if (n === Infinity) return "bits_f32(0x7f800000u)";
  if (n === -Infinity) return "bits_f32(0xff800000u)";
  const s = Math.fround(n).toString();
  return /[.eE]/.test(s) ? s : `${s}.0`;
}

function elemType(a: Arg): { ty: string; bytes: number } {
  const s = wgslScalar(a.t.dtype);
  if (a.vec4) {
    if (a.t.dtype === "u8") throw new Error("codegen: vec4 view of u8");
    return { ty: `vec4<${s}>`, bytes: 16 };
  }
  return { ty: s === "u32" ? "u32" : s, bytes: 4 };
}

function argBytes(a: Arg): { offset: number; total: number } {
  if (a.range) return { offset: a.range.byteOffset, total: a.range.bytes };
  return { offset: 0, total: storageBytes(a.t.dtype, a.t.numel()) };
}

function bindingCode(a: Arg, first: number, device: Device, out: { bindings: number }): string {
  const { ty, bytes: eb } = elemType(a);
  const { offset, total } = argBytes(a);
  // Index of the first bound element in accessor units (elements, vec4s or u8 words).
  const base = offset / eb;
  const rel = base ? ` - ${u(base)}` : "";
  const cap = device.bindingCap;
  const k = Math.ceil(total / cap);
  const access = a.write ? "read_write" : "read";
  const n = a.name;
  const lines: string[] = [];
  const isU8 = a.t.dtype === "u8";
  // Word-level accessor name for u8; element-level for others.
  const ld = isU8 ? `${n}_ldw` : `${n}_ld`;
  const st = isU8 ? `${n}_stw` : `${n}_st`;
  if (k <= 1) {
    // Fixed-size arrays: the length is known, so bounds handling needs no arrayLength() (~1.4x on lavapipe).
    lines.push(`@group(0) @binding(${first}) var<storage, ${access}> ${n}: array<${ty}, ${total / eb}>;`);
    lines.push(`fn ${ld}(ix_: u32) -> ${ty} { return ${n}[ix_${rel}]; }`);
    if (a.write) lines.push(`fn ${st}(ix_: u32, v_: ${ty}) { ${n}[ix_${rel}] = v_; }`);
    out.bindings = 1;
  } else {
    const win = cap / eb;
    for (let w = 0; w < k; w++) {
      const len = Math.min(cap, total - w * cap) / eb;
      lines.push(`@group(0) @binding(${first + w}) var<storage, ${access}> ${n}_${w}: array<${ty}, ${len}>;`);
    }
    lines.push(`const ${n}_WIN: u32 = ${u(win)};`);
    const pick = (stmt: (w: number) => string) => {
      const parts: string[] = [];
      for (let w = 0; w < k - 1; w++) parts.push(`if (q == ${u(w)}) { ${stmt(w)} }`);
      parts.push(stmt(k - 1));
      return parts.join(" ");
    };
    lines.push(
      `fn ${ld}(ix_: u32) -> ${ty} { let i_ = ix_${rel}; let q = i_ / ${n}_WIN; let j = i_ - q * ${n}_WIN; ${
        pick((w) => `return ${n}_${w}[j];`)
      } }`,
    );
    if (a.write) {
      lines.push(
        `fn ${st}(ix_: u32, v_: ${ty}) { let i_ = ix_${rel}; let q = i_ / ${n}_WIN; let j = i_ - q * ${n}_WIN; ${
          pick((w) => `${n}_${w}[j] = v_; return;`)
        } }`,
      );
    }
    out.bindings = k;
  }
  if (isU8) {
    lines.push(`fn ${n}_ld(ix_: u32) -> u32 { return (${n}_ldw(ix_ >> 2u) >> ((ix_ & 3u) * 8u)) & 255u; }`);
  }
  return lines.join("\n");
}

/** Number of storage bindings an argument needs (its windows). */
export function bindingsOf(a: Arg, device: Device): number {
  return Math.ceil(argBytes(a).total / device.bindingCap);
}

/** Splits a linear workgroup count into a dispatch grid within the per-dimension limit. */
export function grid(groups: number, maxDim: number, op: string): [number, number, number] {
  if (groups <= maxDim) return [groups, 1, 1];
  const y = Math.ceil(groups / maxDim);
  if (y > maxDim) {
    throw new Error(`${op}: ${groups} workgroups exceed ${maxDim}^2; tensor too large for one dispatch`);
  }
  return [Math.ceil(groups / y), y, 1];
}

/** Generates the shader source and the bindings for a kernel, without dispatching it. */
export function build(spec: LaunchSpec): { source: string; device: Device } {
  const device = spec.args[0].t.device;
  for (const a of spec.args) {
    if (a.t.device !== device) {
      throw new Error(
        `${spec.op}: tensors are on different devices ("${device.info.label}" and "${a.t.device.info.label}"); ` +
          `shapes ${spec.args.map((x) => `[${x.t.shape}]`).join(", ")}`,
      );
    }
  }
  const parts: string[] = [`// ${spec.op}`];
  let binding = 0;
  for (const a of spec.args) {
    const o = { bindings: 0 };
    parts.push(bindingCode(a, binding, device, o));
    binding += o.bindings;
  }
  if (spec.params) {
    parts.push(`struct Params { p: array<vec4<u32>, 16> }`);
    parts.push(`@group(0) @binding(${binding}) var<uniform> prm: Params;`);
    parts.push(`fn pu(i: u32) -> u32 { return prm.p[i / 4u][i % 4u]; }`);
    parts.push(`fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }`);
    parts.push(`fn pi(i: u32) -> i32 { return bitcast<i32>(pu(i)); }`);
  }
  parts.push(`fn bits_f32(b: u32) -> f32 { return bitcast<f32>(b); }`);
  parts.push(`const WG: u32 = ${u(spec.wg)};\nconst NWG: u32 = ${u(spec.groups)};`);
  if (spec.decls) parts.push(spec.decls);
  parts.push(`@compute @workgroup_size(${spec.wg})
fn main(@builtin(workgroup_id) wid3: vec3<u32>, @builtin(num_workgroups) nwg3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wg = wid3.x + wid3.y * nwg3.x;
  if (wg >= NWG) { return; }
  let gid = wg * WG + lid;
${spec.body}
}`);
  return { source: parts.join("\n"), device };
}

/** Generates, caches and records one dispatch of a kernel. */
export function launch(spec: LaunchSpec): void {
  if (spec.groups === 0) return;
  const { source, device } = build(spec);
  const bindings = [];
  for (const a of spec.args) {
    const s = a.t.storage(spec.op);
    const { offset, total } = argBytes(a);
    const cap = device.bindingCap;
    for (let off = 0; off < total; off += cap) {
      bindings.push({
        buffer: s.buffer,
        offset: offset + off,
        size: Math.min(cap, total - off),
        write: !!a.write,
      });
    }
  }
  device.dispatch(
    spec.op,
    source,
    bindings,
    spec.params ?? null,
    grid(spec.groups, device.maxWorkgroupsPerDim, spec.op),
  );
}

/** A {@link LaunchSpec} for {@link launch1d}: `n` items instead of a workgroup count. */
export type Launch1dSpec = Omit<LaunchSpec, "wg" | "groups"> & {
  /** Number of items; one lane each. */
  n: number;
  /** Workgroup size (default 64). */
  wg?: number;
};

/**
 * The common 1-D launch: one lane per item, workgroups of `wg` (64) lanes, ceil-divided, and a guard so the
 * lanes past `n` in the last workgroup return before the body runs (ORT's out-of-bounds workgroup guard).
 * The body sees `gid < n`.
 */
export function launch1d(spec: Launch1dSpec): void {
  const wg = spec.wg ?? 64;
  launch({
    ...spec,
    wg,
    groups: Math.ceil(spec.n / wg),
    body: `  if (gid >= ${u(spec.n)}) { return; }\n${spec.body}`,
  });
}

/** Batch, channels and the input / output spatial sizes of a 3-D op (convolutions, pooling). */
export interface Geo3d {
  N: number;
  C: number;
  D: number;
  H: number;
  W: number;
  OD: number;
  OH: number;
  OW: number;
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/**
 * @file WGSL generation shared by all kernels.
 *
 * A kernel is a small body of WGSL plus a list of tensor arguments. {@link launch} wraps the body in a
 * complete shader: one storage binding per tensor, accessor functions `x_ld(i)` / `x_st(i, v)`, a uniform
 * `pu(i)`/`pf(i)`/`pi(i)` for per-dispatch scalars, and a `main` that turns a 2-D dispatch grid back into a
 * linear workgroup index `wg` (so more than 65535 workgroups work). Pipelines are cached by source in the
 * device, and every LLVM compile on lavapipe costs tens of milliseconds, so sizes stay out of the source:
 * shapes, strides and element counts travel as named uniform fields (`LaunchSpec.uniforms`, read as
 * `sh.<name>`), storage arrays are runtime-sized, and the workgroup count and the 1-D item count are uniforms
 * too. A kernel then compiles once per variant (dtypes, rank after merging dims, vec4 or not), not once per
 * layer shape. Constants remain where they decide the code's shape (workgroup size, unrolled loop counts).
 * A kernel that names its variant (`LaunchSpec.key`, with its body as a function), or whose body and
 * declarations are plain strings, is not even generated again: its source is kept by the key (or its text)
 * and a short signature of the head, which halved the JavaScript that records a GPU training step.
 *
 * Tensors larger than one storage binding (the device's `bindingCap`) are bound as several consecutive
 * windows of the same buffer; the accessors pick the window from the index. Small tensors get direct array
 * accesses, so the common case pays nothing.
 */
import type { Device, KernelWork } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { storageBytes, wgslScalar } from "../core/dtype.ts";
import { envFlag } from "../core/adapter.ts";

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
  /** Per-dispatch 32-bit words (up to 64 with the uniforms), read with `pu/pf/pi`. */
  params?: Uint32Array;
  /**
   * Named per-dispatch scalars, read in WGSL as `sh.<name>`: a number is a u32 (shapes, strides, counts),
   * `{ i }` an i32, `{ f }` an f32. They share the 64 words of the uniform with `params`.
   */
  uniforms?: Uniforms;
  /** Extra declarations: constants, helper functions, workgroup variables (a function: see `key`). */
  decls?: Text;
  /**
   * The body of `main`; may use `wg` (linear workgroup index), `lid` and `gid` (= wg * WG + lid). A function
   * is called only when the source is not already kept under `key`.
   */
  body: Text;
  /**
   * Everything the body and decls depend on beyond what the shader's head states (the op name, the arguments'
   * names, types and bindings, the uniforms' names and types, the workgroup size) and what is given as strings
   * (those join the key). With a key, the source is generated once per head and key and then reused: a GPU
   * training step records over a thousand dispatches of 1-15 KB of WGSL each, and generating and hashing that
   * text was most of its JavaScript time. `CSN_CHECK_SOURCE=1` (the test task sets it) generates every source
   * anyway and fails on a key that stands for two different sources. A launch whose body and decls are both
   * strings needs no key: its text is the key, so it is kept by default.
   */
  key?: string;
  /** FLOPs/bytes of this launch, for the profiler's rates under `CSN_PROFILE=1` (core/profiler.ts). */
  work?: KernelWork;
}

/** WGSL text, or a function that generates it (called only when needed; see {@link LaunchSpec.key}). */
export type Text = string | (() => string);

function text(t: Text | undefined): string {
  return typeof t === "function" ? t() : (t ?? "");
}

function strOf(t: Text | undefined): string {
  return typeof t === "string" ? t : "";
}

/** Sources by head and key (see {@link LaunchSpec.key}); cleared when it grows past `MAX_SOURCES`. */
const sources = new Map<string, string>();
const MAX_SOURCES = 4096;

/**
 * `check`: generate every keyed source anyway and fail where a kept one differs (env `CSN_CHECK_SOURCE=1`;
 * the test task sets it, so every kernel test also checks its keys).
 */
export const sourceCache: { check: boolean } = { check: envFlag("CSN_CHECK_SOURCE") };

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

/**
 * A named uniform value: u32 (a plain number), i32 (`{ i }`), f32 (`{ f }`), or a u32 divisor (`{ d }`), which
 * also gets WGSL helpers `div_<name>(x)` and `mod_<name>(x)`: exact for every u32 `x` (d < 2^30), but
 * vectorised through an f32 reciprocal, since lavapipe runs a division by a non-constant lane by lane.
 */
export type UniformValue = number | { i: number } | { f: number } | { d: number };

/**
 * WGSL of the exact u32 quotient x / d from `r` ~ 1/d: an f32 estimate, one f32 refinement of the (small,
 * signed) remainder, and a final +-1 step; the error bounds are in docs/perf.md ("Compile cost").
 */
const UDIV_WGSL = `fn udiv_(x: u32, d: u32, r: f32) -> u32 {
  let q0 = u32(min(f32(x) * r, 4294967040.0));
  let e0 = bitcast<i32>(x - q0 * d);
  var q = q0 + bitcast<u32>(i32(floor(f32(e0) * r)));
  let e = bitcast<i32>(x - q * d);
  q = select(q, q - 1u, e < 0);
  q = select(q, q + 1u, e >= bitcast<i32>(d));
  return q;
}`;

/** Named uniform fields of a kernel (see {@link LaunchSpec.uniforms}). */
export type Uniforms = Record<string, UniformValue>;

/** Formats a number as a WGSL u32 literal. */
export function u(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`codegen: ${n} is not a u32`);
  return `${n}u`;
}

/** Formats a number as a WGSL f32 literal. */
export function f(n: number): string {
  // Through a function: WGSL forbids constant expressions that evaluate to inf/NaN (Chromium's Tint enforces
  // it; a function call is not a constant expression). `bits_f32` is declared in every kernel (see build).
  if (Number.isNaN(n)) return "bits_f32(0x7fc00000u)";
  if (n === Infinity) return "bits_f32(0x7f800000u)";
  if (n === -Infinity) return "bits_f32(0xff800000u)";
  const s = Math.fround(n).toString();
  return /[.eE]/.test(s) ? s : `${s}.0`;
}

/**
 * Storage element type of a binding and its size; `reg` is the type accessors return and take. f16 storage is
 * widened to f32 registers (`x_ld` converts, `x_st` rounds), so kernel bodies written in f32 read and write
 * f16 tensors unchanged and accumulate in f32.
 */
function elemType(a: Arg): { ty: string; bytes: number; reg: string } {
  if (a.t.dtype === "f16") {
    return a.vec4 ? { ty: "vec4<f16>", bytes: 8, reg: "vec4<f32>" } : { ty: "f16", bytes: 2, reg: "f32" };
  }
  const s = wgslScalar(a.t.dtype);
  if (a.vec4) {
    if (a.t.dtype === "u8") throw new Error("codegen: vec4 view of u8");
    return { ty: `vec4<${s}>`, bytes: 16, reg: `vec4<${s}>` };
  }
  return { ty: s, bytes: 4, reg: s };
}

function argBytes(a: Arg): { offset: number; total: number } {
  if (a.range) return { offset: a.range.byteOffset, total: a.range.bytes };
  return { offset: 0, total: storageBytes(a.t.dtype, a.t.numel()) };
}

/** How unwindowed storage arrays are declared (exported for the A/B in docs/perf.md). */
export const arrayDecl: { mode: "class" | "runtime" } = { mode: "runtime" };

/**
 * Bytes bound for a whole-tensor argument that fits one binding: its pool buffer's size class (capped at the
 * binding cap), so a fixed-size array of that length depends on the size class, not the exact size.
 */
function classBytes(a: Arg, device: Device): number | null {
  if (a.range || arrayDecl.mode !== "class") return null;
  const total = storageBytes(a.t.dtype, a.t.numel());
  if (total > device.bindingCap) return null;
  return Math.min(a.t.storage("launch").buffer.size, device.bindingCap);
}

function bindingCode(
  a: Arg,
  first: number,
  device: Device,
  out: { bindings: number },
): string {
  const { ty, bytes: eb, reg } = elemType(a);
  // f16 storage: widen on load, round to nearest on store (WGSL's f16() conversion).
  const half = a.t.dtype === "f16";
  const rd = (e: string) => half ? `${reg}(${e})` : e;
  const wr = half ? `${ty}(v_)` : "v_";
  const { total } = argBytes(a);
  // A ranged argument's first element is the uniform `<name>_base_` (uniformsOf).
  const rel = a.range ? ` - sh.${a.name}_base_` : "";
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
    // Runtime-sized: a fixed length would make every tensor size its own pipeline (see docs/perf.md,
    // "Compile cost", for the speed measured against fixed-size arrays).
    const cls = classBytes(a, device);
    const arr = cls === null ? `array<${ty}>` : `array<${ty}, ${cls / eb}>`;
    lines.push(`@group(0) @binding(${first}) var<storage, ${access}> ${n}: ${arr};`);
    lines.push(`fn ${ld}(ix_: u32) -> ${reg} { return ${rd(`${n}[ix_${rel}]`)}; }`);
    if (a.write) lines.push(`fn ${st}(ix_: u32, v_: ${reg}) { ${n}[ix_${rel}] = ${wr}; }`);
    out.bindings = 1;
  } else {
    const win = cap / eb;
    for (let w = 0; w < k; w++) {
      lines.push(`@group(0) @binding(${first + w}) var<storage, ${access}> ${n}_${w}: array<${ty}>;`);
    }
    lines.push(`const ${n}_WIN: u32 = ${u(win)};`);
    const pick = (stmt: (w: number) => string) => {
      const parts: string[] = [];
      for (let w = 0; w < k - 1; w++) parts.push(`if (q == ${u(w)}) { ${stmt(w)} }`);
      parts.push(stmt(k - 1));
      return parts.join(" ");
    };
    lines.push(
      `fn ${ld}(ix_: u32) -> ${reg} { let i_ = ix_${rel}; let q = i_ / ${n}_WIN; let j = i_ - q * ${n}_WIN; ${
        pick((w) => `return ${rd(`${n}_${w}[j]`)};`)
      } }`,
    );
    if (a.write) {
      lines.push(
        `fn ${st}(ix_: u32, v_: ${reg}) { let i_ = ix_${rel}; let q = i_ / ${n}_WIN; let j = i_ - q * ${n}_WIN; ${
          pick((w) => `${n}_${w}[j] = ${wr}; return;`)
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
export function build(spec: LaunchSpec): { source: string; device: Device; words: Uint32Array } {
  return buildWith(spec, {});
}

/** {@link build} with internal uniforms (names ending in "_") placed before the kernel's own. */
function buildWith(
  spec: LaunchSpec,
  internal: Uniforms,
): { source: string; device: Device; words: Uint32Array } {
  const device = spec.args[0].t.device;
  for (const a of spec.args) {
    if (a.t.device !== device) {
      throw new Error(
        `${spec.op}: tensors are on different devices ("${device.info.label}" and "${a.t.device.info.label}"); ` +
          `shapes ${spec.args.map((x) => `[${x.t.shape}]`).join(", ")}`,
      );
    }
  }
  // WGSL wants `enable` before any declaration; only f16 bindings need it (and the device's shader-f16).
  const half = spec.args.some((a) => a.t.dtype === "f16");
  if (half && !device.info.features.includes("shader-f16")) {
    throw new Error(
      `${spec.op}: an f16 tensor needs the device feature "shader-f16", which "${device.info.label}" lacks`,
    );
  }
  const uni = uniformsOf(spec, internal);
  const words = packWords(spec.op, spec.params ?? null, uni);
  // Text given as strings is part of the key itself; the key covers what the functions generate.
  const key = spec.key ??
    (typeof spec.body === "string" && typeof spec.decls !== "function" ? "" : undefined);
  if (key === undefined) return { source: generate(spec, device, uni, half), device, words };
  const k = `${signature(spec, device, uni)}\u0000${key}\u0000${strOf(spec.decls)}\u0000${strOf(spec.body)}`;
  let source = sources.get(k);
  if (source === undefined) {
    if (sources.size >= MAX_SOURCES) sources.clear();
    source = generate(spec, device, uni, half);
    sources.set(k, source);
  } else if (sourceCache.check && source !== generate(spec, device, uni, half)) {
    throw new Error(
      `${spec.op}: the key "${key}" stands for two different sources; it misses a parameter`,
    );
  }
  return { source, device, words };
}

/**
 * The uniform fields in declaration order: the workgroup count, the launcher's internal ones, each ranged
 * argument's base, then the kernel's own (a divisor `d` as `d` and its reciprocal `d_rcp_`).
 */
function uniformsOf(spec: LaunchSpec, internal: Uniforms): Uniforms {
  const uni: Uniforms = { nwg_: spec.groups, ...internal };
  // Index of a ranged argument's first bound element in accessor units (elements, vec4s or u8 words): a
  // uniform, so the chunks of a split launch share one pipeline.
  for (const a of spec.args) {
    if (a.range) uni[`${a.name}_base_`] = a.range.byteOffset / elemType(a).bytes;
  }
  for (const k in spec.uniforms) {
    const v = spec.uniforms[k];
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(k) || k.endsWith("_")) {
      throw new Error(`${spec.op}: uniform name "${k}" must be an identifier not ending in "_"`);
    }
    if (typeof v === "object" && "d" in v) {
      if (!Number.isInteger(v.d) || v.d < 1 || v.d >= 2 ** 30) {
        throw new Error(`${spec.op}: divisor ${k} = ${v.d} must be an integer in [1, 2^30)`);
      }
      uni[k] = v.d;
      uni[`${k}_rcp_`] = { f: 1 / v.d };
    } else uni[k] = v;
  }
  return uni;
}

/**
 * What a shader's head is generated from, as a short string: the op, workgroup size, the binding cap (window
 * sizes), each argument's name, type, access and windows, the params' length, and the uniforms' names and
 * types (whose values stay out of the source).
 */
function signature(spec: LaunchSpec, device: Device, uni: Uniforms): string {
  let s = `${spec.op}|${spec.wg}|${device.bindingCap}|${spec.params?.length ?? -1}|`;
  for (const a of spec.args) {
    s += `${a.name}:${a.t.dtype}:${a.vec4 ? 1 : 0}${a.write ? 1 : 0}${a.range ? 1 : 0}:${
      bindingsOf(a, device)
    }:${classBytes(a, device) ?? ""},`;
  }
  s += "|";
  for (const k in uni) s += `${k}:${uniformType(uni[k])},`;
  return s;
}

/** The WGSL type of an expanded uniform (divisors are u32 by then). */
function uniformType(v: UniformValue): "u32" | "i32" | "f32" {
  return typeof v === "number" ? "u32" : "i" in v ? "i32" : "f32";
}

/** The whole WGSL source of a launch (see {@link LaunchSpec.key} for when it is generated). */
function generate(spec: LaunchSpec, device: Device, uni: Uniforms, half: boolean): string {
  const parts: string[] = [`// ${spec.op}`];
  if (half) parts.push("enable f16;");
  let binding = 0;
  for (const a of spec.args) {
    const o = { bindings: 0 };
    parts.push(bindingCode(a, binding, device, o));
    binding += o.bindings;
  }
  parts.push(uniformDecl(spec.params ?? null, uni).replace("@binding(?)", `@binding(${binding})`));
  if (spec.params) {
    parts.push(`fn pu(i: u32) -> u32 { return sh.p[i / 4u][i % 4u]; }`);
    parts.push(`fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }`);
    parts.push(`fn pi(i: u32) -> i32 { return bitcast<i32>(pu(i)); }`);
  }
  const divs: string[] = [];
  for (const k in spec.uniforms) {
    const v = spec.uniforms[k];
    if (typeof v === "object" && "d" in v) {
      divs.push(
        `fn div_${k}(x: u32) -> u32 { return udiv_(x, sh.${k}, sh.${k}_rcp_); }\n` +
          `fn mod_${k}(x: u32) -> u32 { return x - div_${k}(x) * sh.${k}; }`,
      );
    }
  }
  if (divs.length) parts.push(UDIV_WGSL, ...divs);
  parts.push(`fn bits_f32(b: u32) -> f32 { return bitcast<f32>(b); }`);
  parts.push(`const WG: u32 = ${u(spec.wg)};`);
  return parts.join("\n") + tail(spec);
}

/** The declarations and `main` after a shader's head (with the newline that joins them). */
function tail(spec: LaunchSpec): string {
  const decls = text(spec.decls);
  return `${decls ? `\n${decls}` : ""}
@compute @workgroup_size(${spec.wg})
fn main(@builtin(workgroup_id) wid3: vec3<u32>, @builtin(num_workgroups) nwg3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wg = wid3.x + wid3.y * nwg3.x;
  if (wg >= sh.nwg_) { return; }
  let gid = wg * WG + lid;
${text(spec.body)}
}`;
}

/**
 * The uniform struct `sh` (the `params` words as `p`, then one field per named uniform). Field order is the
 * insertion order, so the source depends only on the names and types.
 */
function uniformDecl(prm: Uint32Array | null, uni: Uniforms): string {
  const pw = prm ? Math.ceil(prm.length / 4) : 0;
  const fields: string[] = pw ? [`p: array<vec4<u32>, ${pw}>`] : [];
  for (const k in uni) fields.push(`${k}: ${uniformType(uni[k])}`);
  return `struct Sh_ { ${fields.join(", ")} }\n@group(0) @binding(?) var<uniform> sh: Sh_;`;
}

/** The words of {@link uniformDecl}'s struct: the params, then each uniform's value in its type. */
function packWords(op: string, prm: Uint32Array | null, uni: Uniforms): Uint32Array {
  const pw = prm ? Math.ceil(prm.length / 4) : 0;
  let count = 0;
  for (const _ in uni) count++;
  const total = pw * 4 + count;
  if (total > 64) {
    throw new Error(`${op}: ${prm?.length ?? 0} params words and ${count} uniforms exceed 64 words`);
  }
  const words = new Uint32Array(Math.ceil(total / 4) * 4);
  const fw = new Float32Array(words.buffer), iw = new Int32Array(words.buffer);
  if (prm) words.set(prm);
  let at = pw * 4;
  for (const k in uni) {
    const v = uni[k];
    if (typeof v === "number") {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new Error(`${op}: uniform ${k} = ${v} is not a u32 (pass { i } or { f } for other types)`);
      }
      words[at] = v;
    } else if ("d" in v) {
      throw new Error(`${op}: divisor ${k} was not expanded`);
    } else if ("i" in v) {
      if (!Number.isInteger(v.i) || v.i < -(2 ** 31) || v.i >= 2 ** 31) {
        throw new Error(`${op}: uniform ${k} = ${v.i} is not an i32`);
      }
      iw[at] = v.i;
    } else fw[at] = v.f;
    at++;
  }
  return words;
}

/** Generates, caches and records one dispatch of a kernel. */
export function launch(spec: LaunchSpec): void {
  launchWith(spec, {});
}

function launchWith(spec: LaunchSpec, internal: Uniforms): void {
  if (spec.groups === 0) return;
  const { source, device, words } = buildWith(spec, internal);
  const bindings = [];
  for (const a of spec.args) {
    const s = a.t.storage(spec.op);
    if (a.write) s.version++;
    const { offset, total: exact } = argBytes(a);
    const total = classBytes(a, device) ?? exact;
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
    words,
    grid(spec.groups, device.maxWorkgroupsPerDim, spec.op),
    spec.work,
  );
}

/** A {@link LaunchSpec} for {@link launch1d}: `n` items instead of a workgroup count. */
export type Launch1dSpec = Omit<LaunchSpec, "wg" | "groups"> & {
  /** Number of items; one lane each. */
  n: number;
  /** Workgroup size (default 64). */
  wg?: number;
};

/** {@link launch1d}'s first line: lanes past the item count return. */
const GUARD = "  if (gid >= sh.n_) { return; }\n";

/**
 * The common 1-D launch: one lane per item, workgroups of `wg` (64) lanes, ceil-divided, and a guard so the
 * lanes past `n` in the last workgroup return before the body runs (ORT's out-of-bounds workgroup guard).
 * The body sees `gid < n`; `n` is the uniform `sh.n_`, so the item count does not enter the source.
 */
export function launch1d(spec: Launch1dSpec): void {
  const wg = spec.wg ?? 64;
  launchWith({
    ...spec,
    wg,
    groups: Math.ceil(spec.n / wg),
    // A string body stays a string, so it keeps joining the source cache's key.
    body: typeof spec.body === "string" ? GUARD + spec.body : () => GUARD + text(spec.body),
  }, { n_: spec.n });
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

/**
 * @file Tensors: a shape, a dtype and a reference-counted GPU storage on one {@link Device}. Storage is always
 * contiguous row-major; `reshape`/`view` share it without copying. Every tensor is registered in the current
 * {@link tidy} scope when created.
 */
import type { Device } from "./device.ts";
import { allocHost, bytesPerElement, checkDType, type DType, type HostArray, storageBytes } from "./dtype.ts";
import { track } from "./scope.ts";
import { backward as runBackward, type BackwardOptions, type Node, record } from "./autograd.ts";

/** A pooled GPU buffer shared by all views of a tensor; returned to the pool when the last view is disposed. */
export class Storage {
  refs = 1;
  /**
   * Bumped by every recorded write (a kernel binding it for writing, `assign`, a host write through
   * `Tensor.written`): what a cached copy of the data (an f16 weight under autocast) checks before reuse.
   */
  version = 0;
  /** A derived copy kept while `version` is unchanged (kernels/cast.ts); freed with the storage. */
  derived: { version: number; t: Tensor } | null = null;
  constructor(readonly device: Device, readonly buffer: GPUBuffer, readonly bytes: number) {}

  /** Allocates storage for `n` elements of `dtype` from the device's pool. */
  static alloc(device: Device, dtype: DType, n: number, what: string): Storage {
    const bytes = storageBytes(dtype, n);
    return new Storage(device, device.pool.acquire(bytes, what), bytes);
  }

  release(): void {
    if (--this.refs !== 0) return;
    this.derived?.t.dispose();
    this.derived = null;
    if (!this.device.destroyed) this.device.pool.release(this.buffer, this.bytes);
  }
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Throws unless `shape` is a list of non-negative integers. */
export function checkShape(shape: readonly number[], where: string): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${where}: invalid shape [${shape}] (expected non-negative integers)`);
  }
  return [...shape];
}

let nextId = 1;

/** An n-dimensional array on a GPU device. */
export class Tensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** The device holding the data. */
  readonly device: Device;
  /** Unique id (for debugging). */
  readonly id = nextId++;
  /** Whether gradients flow into this tensor. Set on leaves by the user; set on op outputs by autograd. */
  requiresGrad = false;
  /** Accumulated gradient of a leaf, filled by `backward()`. */
  grad: Tensor | null = null;
  /** The op that produced this tensor (its autograd node), or null for leaves. */
  node: Node | null = null;
  #storage: Storage | null;

  /** Wraps storage; prefer the factory functions (`tensor`, `zeros`, ...). */
  constructor(device: Device, shape: readonly number[], dtype: DType, storage: Storage, tracked = true) {
    this.device = device;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.#storage = storage;
    if (tracked) track(this);
  }

  /** An uninitialised tensor (used by kernels for outputs). */
  static empty(device: Device, shape: readonly number[], dtype: DType, what = "alloc"): Tensor {
    return new Tensor(device, shape, dtype, Storage.alloc(device, dtype, numel(shape), what));
  }

  /** Number of elements (PyTorch's `numel()`). */
  numel(): number {
    return numel(this.shape);
  }

  /** The shape as PyTorch's `size()` gives it, or one dimension's length (negative dims count from the end). */
  size(): number[];
  size(dim: number): number;
  size(dim?: number): number | number[] {
    if (dim === undefined) return [...this.shape];
    const d = dim < 0 ? dim + this.shape.length : dim;
    if (!Number.isInteger(d) || d < 0 || d >= this.shape.length) {
      throw new Error(`size: dim ${dim} out of range for tensor ${this.describe()}`);
    }
    return this.shape[d];
  }

  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }

  /** Whether `dispose()` was called. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** A short description for error messages, e.g. `[2,3] f32`. */
  describe(): string {
    return `[${this.shape.join(",")}] ${this.dtype}${this.disposed ? " (disposed)" : ""}`;
  }

  /** The storage, or an error naming `op` if the tensor was disposed. */
  storage(op: string): Storage {
    if (!this.#storage) throw new Error(`${op}: tensor [${this.shape.join(",")}] ${this.dtype} was disposed`);
    if (this.device.destroyed) {
      throw new Error(`${op}: the device of tensor ${this.describe()} was destroyed`);
    }
    return this.#storage;
  }

  /** Frees this handle; the storage returns to the pool when no view or saved copy holds it. Idempotent. */
  dispose(): void {
    if (!this.#storage) return;
    this.#storage.release();
    this.#storage = null;
    const n = this.node;
    this.node = null;
    n?.unref();
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** A new untracked handle on the same storage (no grad); used for saved activations. */
  share(): Tensor {
    const s = this.storage("share");
    s.refs++;
    return new Tensor(this.device, this.shape, this.dtype, s, false);
  }

  /** Copies the data to the host (waits for the GPU). */
  async toArray(): Promise<HostArray> {
    const s = this.storage("toArray");
    const n = this.numel();
    const bytes = n * bytesPerElement(this.dtype);
    if (n === 0) return allocHost(this.dtype, 0);
    const buf = await this.device.read(s.buffer, 0, Math.ceil(bytes / 4) * 4);
    switch (this.dtype) {
      case "f32":
        return new Float32Array(buf, 0, n);
      case "i32":
        return new Int32Array(buf, 0, n);
      case "u8":
        return new Uint8Array(buf, 0, n);
      case "f16":
        return new Uint16Array(buf, 0, n);
    }
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.numel() !== 1) {
      throw new Error(`item: tensor ${this.describe()} has ${this.numel()} elements, not 1`);
    }
    return (await this.toArray())[0];
  }

  /**
   * Overwrites this tensor's data with `src`'s (same shape and dtype, same device), in place: used for
   * optimizer state, running statistics and loading weights into existing parameters. Not recorded by
   * autograd.
   */
  assign(src: Tensor): this {
    const d = this.storage("assign"), s = src.storage("assign");
    if (src.shape.join() !== this.shape.join() || src.dtype !== this.dtype) {
      throw new Error(`assign: cannot copy ${src.describe()} into ${this.describe()}`);
    }
    if (src.device !== this.device) throw new Error(`assign: tensors are on different devices`);
    const bytes = Math.min(d.bytes, s.bytes);
    if (d !== s && bytes > 0) this.device.copy(s.buffer, 0, d.buffer, 0, bytes);
    d.version++;
    return this;
  }

  /** Marks the data as changed by a write that bypassed the engine's kernels (a raw buffer write). */
  written(): void {
    this.storage("written").version++;
  }

  /** Same data, new shape (no copy). One dimension may be -1. Differentiable. */
  reshape(shape: readonly number[]): Tensor {
    const s = this.storage("reshape");
    const out = resolveShape(shape, this.numel(), this.shape, "reshape");
    s.refs++;
    const t = new Tensor(this.device, out, this.dtype, s);
    const inShape = this.shape;
    return record("reshape", t, [this], [], (g) => [g.reshape(inShape)]);
  }

  /** Alias of {@link reshape}: storage is always contiguous, so every view is a reshape. */
  view(shape: readonly number[]): Tensor {
    return this.reshape(shape);
  }

  /** Backpropagates from this tensor (single-element unless `grad` is given). */
  backward(grad?: Tensor, opts?: BackwardOptions): void {
    runBackward(this, grad, opts);
  }

  /** Marks a tensor as a leaf that requires grad; returns it. */
  requireGrad(flag = true): this {
    if (flag && this.dtype !== "f32") {
      throw new Error(`requireGrad: only f32 tensors can require grad, not ${this.dtype}`);
    }
    this.requiresGrad = flag;
    return this;
  }

  /** `Tensor([2,3] f32)` */
  toString(): string {
    return `Tensor(${this.describe()})`;
  }
}

/** Resolves a -1 in a target shape and checks the element count. */
export function resolveShape(
  shape: readonly number[],
  size: number,
  from: readonly number[],
  where: string,
): number[] {
  const out = [...shape];
  const neg = out.filter((d) => d === -1).length;
  if (neg > 1 || out.some((d) => !Number.isInteger(d) || d < -1)) {
    throw new Error(`${where}: invalid shape [${shape}]`);
  }
  if (neg === 1) {
    const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    if (known === 0 || size % known !== 0) {
      throw new Error(`${where}: cannot reshape [${from}] (${size} elements) to [${shape}]`);
    }
    out[out.indexOf(-1)] = size / known;
  }
  if (numel(out) !== size) {
    throw new Error(`${where}: cannot reshape [${from}] (${size} elements) to [${shape}]`);
  }
  return out;
}

/** Options of {@link tensor} and the other factories. */
export interface TensorOptions {
  device: Device;
  dtype?: DType;
  requiresGrad?: boolean;
}

type Nested = number | boolean | Nested[];

function flatten(data: Nested[], shape: number[], out: number[], depth: number): void {
  if (depth === 0) shape.push(data.length);
  for (const v of data) {
    if (Array.isArray(v)) {
      if (shape.length === depth + 1) shape.push(v.length);
      if (v.length !== shape[depth + 1]) throw new Error("tensor: ragged nested array");
      flatten(v, shape, out, depth + 1);
    } else out.push(Number(v));
  }
}

/**
 * Creates a tensor from host data: a typed array or a (possibly nested) number array, as `tensor(data, opts)`
 * or `tensor(data, shape, opts)`. The shape defaults to the nesting (or 1-D); dtype defaults to the typed array's (Int32Array -> i32, Uint8Array -> u8) or f32.
 */
export function tensor(data: ArrayLike<number> | Nested[] | HostArray, opts: TensorOptions): Tensor;
export function tensor(
  data: ArrayLike<number> | Nested[] | HostArray,
  shape: readonly number[] | undefined,
  opts: TensorOptions,
): Tensor;
export function tensor(
  data: ArrayLike<number> | Nested[] | HostArray,
  shapeOrOpts: readonly number[] | undefined | TensorOptions,
  maybeOpts?: TensorOptions,
): Tensor {
  const shape = Array.isArray(shapeOrOpts) ? shapeOrOpts as readonly number[] : undefined;
  const opts =
    (Array.isArray(shapeOrOpts) || shapeOrOpts === undefined ? maybeOpts : shapeOrOpts) as TensorOptions;
  if (!opts?.device) throw new Error("tensor: options.device is required (there is no global device)");
  let flat: ArrayLike<number>;
  let inferred: number[];
  if (Array.isArray(data)) {
    const vals: number[] = [];
    inferred = [];
    flatten(data as Nested[], inferred, vals, 0);
    if (inferred.length === 1 && (data as Nested[]).length === 0) inferred = [0];
    flat = vals;
  } else {
    flat = data as ArrayLike<number>;
    inferred = [flat.length];
  }
  const dtype = checkDType(
    opts.dtype ?? (data instanceof Int32Array ? "i32" : data instanceof Uint8Array ? "u8" : "f32"),
    "tensor",
  );
  const shp = shape ? checkShape(shape, "tensor") : inferred;
  if (numel(shp) !== flat.length) {
    throw new Error(`tensor: ${flat.length} values do not fill shape [${shp}] (${numel(shp)} elements)`);
  }
  if (dtype === "f16") throw new Error("tensor: dtype f16 is not supported yet");
  const host = allocHost(dtype, flat.length);
  (host as Float32Array).set(flat as ArrayLike<number>);
  const t = Tensor.empty(opts.device, shp, dtype, "tensor");
  if (host.byteLength) opts.device.write(t.storage("tensor").buffer, 0, host);
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

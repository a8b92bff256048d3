/**
 * @file Opening a WebGPU device and running kernels on it.
 *
 * A {@link Device} wraps one GPUDevice with everything the kernels need: the adapter's full limits, a pipeline
 * cache keyed by WGSL source, a buffer pool, and one command encoder that collects many dispatches per
 * submission (every CPU-GPU wait costs at least ~11 ms in Deno, so nothing waits until data is read back).
 * Per-dispatch scalars (scalar operands, learning rates) live in a uniform "arena" that is uploaded once per
 * submission, so pipelines do not depend on them. A process may open several devices; there is no global one.
 */
import { BufferPool, type PoolStats } from "./buffer_pool.ts";
import { type KernelWork, Profiler, profilingRequested } from "./profiler.ts";
import { benchmarkRequested, Tuner } from "./tuner.ts";
import {
  type AdapterOptions,
  defaultProfile,
  defaultSubmitEvery,
  type KernelProfile,
  listAdapters,
  requestDevice,
  selectAdapter,
} from "./adapter.ts";

export { type AdapterOptions, type KernelProfile, type KernelWork, listAdapters, Profiler, Tuner };

/** Options of {@link openDevice}. */
export interface DeviceOptions extends AdapterOptions {
  /**
   * Cap on the bytes of one storage binding, below the adapter's `maxStorageBufferBindingSize`. Tensors
   * larger than this are bound as several windows. Tests set it tiny to exercise that path.
   */
  maxBindingBytes?: number;
  /** Cap on workgroups per dispatch dimension (default the adapter's limit); tests set it tiny. */
  maxWorkgroupsPerDim?: number;
  /**
   * Cap on the workgroup memory kernels plan for (default the adapter's limit); tests set WebGPU's guaranteed
   * 16384 bytes to cover the tilings a browser's default device gets.
   */
  maxWorkgroupStorage?: number;
  /**
   * Submit what has been recorded every this many dispatches, so that the GPU starts on a step's first
   * kernels while the host still records the rest; 0 submits only where it must (before uploads, readbacks,
   * syncs, and when the uniform arena fills: every 1024 dispatches). Default: 128 on a GPU, 0 on a software
   * adapter (see `defaultSubmitEvery`).
   */
  submitEvery?: number;
  /** A label for error messages when a process holds several devices. */
  label?: string;
  /**
   * Kernel tuning profile: "cpu" for software adapters (lavapipe runs non-uniform loads lane by lane, so
   * kernels favour uniform loads and register reuse), "gpu" otherwise (workgroup-memory tiling). Defaults
   * from the adapter; tests force each to cover both code paths.
   */
  profile?: KernelProfile;
  /**
   * Time every dispatch on the GPU (see {@link Device.profiler}); defaults to env `CSN_PROFILE=1` where the
   * adapter has `timestamp-query`. Costs a compute pass per dispatch, so it is off otherwise.
   */
  profiling?: boolean;
  /**
   * Time the variants of the kernels that have several (the "gpu" profile's GEMM and implicit-GEMM conv tiles)
   * on each shape's first call and run the fastest from then on (see {@link Device.tuner}), as
   * `torch.backends.cudnn.benchmark`; defaults to env `CSN_BENCHMARK=1` where the adapter has
   * `timestamp-query`. Off otherwise: results then depend on which variant won.
   */
  benchmark?: boolean;
}

/** What {@link openDevice} got. */
export interface DeviceInfo {
  label: string;
  description: string;
  vendor: string;
  architecture: string;
  isFallbackAdapter: boolean;
  features: string[];
  subgroupSize: number;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  /** Effective binding cap (after the `maxBindingBytes` option). */
  bindingCap: number;
  /** Kernel tuning profile in use. */
  profile: KernelProfile;
  /** Dispatches recorded before a submit (see {@link DeviceOptions.submitEvery}; 0: only where needed). */
  submitEvery: number;
  maxComputeWorkgroupsPerDimension: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxStorageBuffersPerShaderStage: number;
}

/** One storage binding of a dispatch. */
export interface BufferBinding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
  /** Bound read-write (true) or read-only (false). */
  write: boolean;
}

/** Picks an adapter, requests its maximum limits and optional features, and wraps the device. */
export async function openDevice(opts: DeviceOptions = {}): Promise<Device> {
  const adapter = await selectAdapter(opts);
  const { gpu, subgroups } = await requestDevice(adapter, opts);
  return new Device(gpu, adapter, opts, subgroups);
}

const ARENA_BYTES = 256 * 1024;
/** Largest WGSL type naga accepts (bytes). */
const MAX_WGSL_TYPE_BYTES = 2 ** 30;
const PARAM_SLOT = 256;
/**
 * Bind groups kept for reuse. A GPUBindGroup has no destroy(): Deno frees it only when V8 collects its wrapper,
 * and lavapipe maps memory for each one, so a process that makes one per dispatch and allocates little else
 * runs into the kernel's 65530-mapping limit and crashes. A training step binds the same pooled buffers every
 * step, so caching makes the steady state create none.
 */
const BIND_GROUP_CACHE = 4096;

/** A WebGPU device with a pipeline cache, a buffer pool and batched command submission. */
export class Device {
  /** The underlying GPUDevice. */
  readonly gpu: GPUDevice;
  /** What was opened: adapter, features and the limits in force. */
  readonly info: DeviceInfo;
  /** Pool of storage buffers. */
  readonly pool: BufferPool;
  /** Bytes of one storage binding window (multiple of 256). */
  readonly bindingCap: number;
  /** Workgroups per dispatch dimension. */
  readonly maxWorkgroupsPerDim: number;
  /** Whether subgroup built-ins may be used in WGSL (without `enable subgroups;` under Deno). */
  readonly hasSubgroups: boolean;
  /** Kernel tuning profile (see {@link DeviceOptions.profile}). */
  readonly profile: KernelProfile;
  /** Per-kernel GPU timing when profiling is on (`DeviceOptions.profiling`, env `CSN_PROFILE=1`), else null. */
  readonly profiler: Profiler | null = null;
  /** The variant tuner when benchmarking is on (`DeviceOptions.benchmark`, env `CSN_BENCHMARK=1`), else null. */
  readonly tuner: Tuner | null = null;

  #pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout; id: number }>();
  /** Bind groups by pipeline and bound ranges, least recently used first (see {@link BIND_GROUP_CACHE}). */
  #groups = new Map<string, GPUBindGroup>();
  #bufferIds = new WeakMap<GPUBuffer, number>();
  #nextBufferId = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #arena: GPUBuffer;
  #arenaHost = new Uint8Array(ARENA_BYTES);
  #arenaUsed = 0;
  #dispatches = 0;
  readonly #submitEvery: number;
  #errors: string[] = [];
  #destroyed = false;
  #stats = { dispatches: 0, submits: 0, pipelines: 0, bindGroups: 0 };

  constructor(gpu: GPUDevice, adapter: GPUAdapter, opts: DeviceOptions, subgroups: boolean) {
    this.gpu = gpu;
    const lim = gpu.limits;
    const align = lim.minStorageBufferOffsetAlignment;
    // Bindings are declared as fixed-size WGSL arrays, and naga (wgpu's shader compiler) refuses any type over
    // 1 GiB, whatever the adapter allows (NVIDIA reports 2 GiB bindings).
    const hwCap = Math.floor(Math.min(lim.maxStorageBufferBindingSize, MAX_WGSL_TYPE_BYTES) / align) * align;
    const want = opts.maxBindingBytes ?? hwCap;
    if (want < 256) throw new Error(`openDevice: maxBindingBytes must be at least 256 (got ${want})`);
    this.bindingCap = Math.max(align, Math.floor(Math.min(want, hwCap) / align) * align);
    this.maxWorkgroupsPerDim = Math.min(
      opts.maxWorkgroupsPerDim ?? Infinity,
      lim.maxComputeWorkgroupsPerDimension,
    );
    this.hasSubgroups = subgroups;
    this.profile = opts.profile ?? defaultProfile(adapter);
    if (opts.submitEvery !== undefined && !(Number.isInteger(opts.submitEvery) && opts.submitEvery >= 0)) {
      throw new Error(`openDevice: submitEvery must be an integer >= 0, got ${opts.submitEvery}`);
    }
    this.#submitEvery = opts.submitEvery ?? defaultSubmitEvery(adapter);
    this.pool = new BufferPool(
      gpu,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      lim.maxBufferSize,
    );
    this.#arena = gpu.createBuffer({
      size: ARENA_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    gpu.addEventListener("uncapturederror", (e) => {
      this.#errors.push(String((e as GPUUncapturedErrorEvent).error?.message ?? e));
    });
    const feats = [...gpu.features] as string[];
    const timestamps = gpu.features.has("timestamp-query");
    // Profiling and tuning both need GPU timestamps: asked for by option, their absence is an error; by env, a
    // warning.
    const timed = (asked: boolean | undefined, byEnv: boolean, what: string, envName: string): boolean => {
      const desc = adapter.info.description;
      if (asked && !timestamps) {
        throw new Error(`openDevice: ${what} needs the timestamp-query feature, which "${desc}" lacks`);
      }
      if (!(asked ?? byEnv)) return false;
      if (!timestamps) console.warn(`${envName}: "${desc}" has no timestamp-query; no ${what}`);
      return timestamps;
    };
    if (timed(opts.profiling, profilingRequested(), "profiling", "CSN_PROFILE")) {
      this.profiler = new Profiler(gpu);
    }
    if (timed(opts.benchmark, benchmarkRequested(), "benchmark", "CSN_BENCHMARK")) {
      this.tuner = new Tuner(gpu);
    }
    this.info = {
      label: opts.label ?? adapter.info.description,
      description: adapter.info.description,
      vendor: adapter.info.vendor,
      architecture: adapter.info.architecture,
      isFallbackAdapter: adapter.info.isFallbackAdapter,
      features: feats.sort(),
      subgroupSize: (adapter.info as unknown as { subgroupMinSize?: number }).subgroupMinSize ?? 0,
      maxBufferSize: lim.maxBufferSize,
      maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
      bindingCap: this.bindingCap,
      profile: this.profile,
      submitEvery: this.#submitEvery,
      maxComputeWorkgroupsPerDimension: this.maxWorkgroupsPerDim,
      maxComputeWorkgroupStorageSize: Math.min(
        opts.maxWorkgroupStorage ?? Infinity,
        lim.maxComputeWorkgroupStorageSize,
      ),
      maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: lim.maxStorageBuffersPerShaderStage,
    };
  }

  /** Pool byte counts (live/peak/pooled) and dispatch counters. */
  stats(): PoolStats & { dispatches: number; submits: number; pipelines: number; bindGroups: number } {
    return { ...this.pool.stats(), ...this.#stats };
  }

  #check(what: string) {
    if (this.#destroyed) throw new Error(`${what}: device "${this.info.label}" was destroyed`);
  }

  #pipeline(source: string, bindings: BufferBinding[], hasParams: boolean, name: string) {
    let entry = this.#pipelines.get(source);
    if (entry) return entry;
    const entries: GPUBindGroupLayoutEntry[] = bindings.map((b, i) => ({
      binding: i,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: b.write ? "storage" : "read-only-storage" },
    }));
    if (hasParams) {
      entries.push({
        binding: bindings.length,
        visibility: GPUShaderStage.COMPUTE,
        // The arena slot changes every dispatch; a dynamic offset keeps it out of the cached bind group.
        buffer: { type: "uniform", hasDynamicOffset: true },
      });
    }
    const layout = this.gpu.createBindGroupLayout({ entries });
    const module = this.gpu.createShaderModule({ code: source, label: name });
    const pipeline = this.gpu.createComputePipeline({
      label: name,
      layout: this.gpu.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    entry = { pipeline, layout, id: this.#pipelines.size };
    this.#pipelines.set(source, entry);
    this.#stats.pipelines++;
    return entry;
  }

  /**
   * Records one dispatch of `source` (entry point `main`) over `workgroups` workgroups in the current batch.
   * `params` (at most 256 bytes) is bound as a uniform right after the storage bindings. `work` (FLOPs, bytes)
   * only feeds the profiler's rates.
   */
  dispatch(
    name: string,
    source: string,
    bindings: BufferBinding[],
    params: Uint32Array | null,
    workgroups: [number, number, number],
    work?: KernelWork,
  ): void {
    this.#check(name);
    if (bindings.length > this.info.maxStorageBuffersPerShaderStage) {
      throw new Error(
        `${name}: needs ${bindings.length} storage bindings, over the device limit of ` +
          `${this.info.maxStorageBuffersPerShaderStage} (a tensor larger than the binding cap is bound in windows)`,
      );
    }
    if (params && params.byteLength > PARAM_SLOT) throw new Error(`${name}: params over ${PARAM_SLOT} bytes`);
    if ((params && this.#arenaUsed + PARAM_SLOT > ARENA_BYTES) || this.profiler?.full || this.tuner?.full) {
      this.flush();
    }
    const entry = this.#pipeline(source, bindings, params !== null, name);
    const group = this.#bindGroup(entry, bindings, params !== null);
    // A tuning trial's dispatches are timed for the tuner and left out of the profile.
    const pass = this.tuner?.measuring
      ? this.#passOf(this.tuner.passDescriptor(name))
      : this.profiler
      ? this.#timedPass(name, source, bindings, work)
      : this.#computePass();
    pass.setPipeline(entry.pipeline);
    if (params) {
      const off = this.#arenaUsed;
      this.#arenaHost.set(new Uint8Array(params.buffer, params.byteOffset, params.byteLength), off);
      this.#arenaUsed += PARAM_SLOT;
      pass.setBindGroup(0, group, [off]);
    } else {
      pass.setBindGroup(0, group);
    }
    pass.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
    this.#dispatches++;
    this.#stats.dispatches++;
    if (this.#submitEvery > 0 && this.#dispatches >= this.#submitEvery) this.flush();
  }

  /** The bind group of these ranges for this pipeline: cached, or made and cached (least recently used out). */
  #bindGroup(
    entry: { layout: GPUBindGroupLayout; id: number },
    bindings: BufferBinding[],
    hasParams: boolean,
  ): GPUBindGroup {
    let key = String(entry.id);
    for (const b of bindings) {
      let id = this.#bufferIds.get(b.buffer);
      if (id === undefined) this.#bufferIds.set(b.buffer, id = this.#nextBufferId++);
      key += `|${id}:${b.offset}:${b.size}`;
    }
    let group = this.#groups.get(key);
    if (group) {
      this.#groups.delete(key);
      this.#groups.set(key, group);
      return group;
    }
    const entries: GPUBindGroupEntry[] = bindings.map((b, i) => ({
      binding: i,
      resource: { buffer: b.buffer, offset: b.offset, size: b.size },
    }));
    if (hasParams) {
      entries.push({
        binding: bindings.length,
        resource: { buffer: this.#arena, offset: 0, size: PARAM_SLOT },
      });
    }
    group = this.gpu.createBindGroup({ layout: entry.layout, entries });
    this.#stats.bindGroups++;
    if (this.#groups.size >= BIND_GROUP_CACHE) this.#groups.delete(this.#groups.keys().next().value!);
    this.#groups.set(key, group);
    return group;
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.#encoder) this.#encoder = this.gpu.createCommandEncoder();
    if (!this.#pass) this.#pass = this.#encoder.beginComputePass();
    return this.#pass;
  }

  /** A pass of its own for one dispatch, with timestamps at its beginning and end. */
  #timedPass(
    name: string,
    source: string,
    bindings: BufferBinding[],
    work?: KernelWork,
  ): GPUComputePassEncoder {
    const bound = bindings.reduce((s, b) => s + b.size, 0);
    return this.#passOf(this.profiler!.passDescriptor(name, source, bound, work));
  }

  /** A pass of its own, begun with `desc` (its timestamps). */
  #passOf(desc: GPUComputePassDescriptor): GPUComputePassEncoder {
    this.#pass = this.#encoderNoPass().beginComputePass(desc);
    return this.#pass;
  }

  #encoderNoPass(): GPUCommandEncoder {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (!this.#encoder) this.#encoder = this.gpu.createCommandEncoder();
    return this.#encoder;
  }

  /** Records a buffer-to-buffer copy in the current batch. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#check("copy");
    this.#encoderNoPass().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Submits everything recorded so far. Cheap (no wait); called before uploads and readbacks. */
  flush(): void {
    if (!this.#encoder) return;
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (this.#arenaUsed > 0) {
      this.gpu.queue.writeBuffer(this.#arena, 0, this.#arenaHost, 0, this.#arenaUsed);
      this.#arenaUsed = 0;
    }
    this.profiler?.resolve(this.#encoder);
    this.tuner?.resolve(this.#encoder);
    this.gpu.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    this.#dispatches = 0;
    this.#stats.submits++;
  }

  /** Uploads host bytes into a buffer, after everything recorded so far (so pooled buffers are safe). */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.#check("write");
    this.flush();
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const n = Math.floor(bytes.byteLength / 4) * 4;
    if (n > 0) this.gpu.queue.writeBuffer(buffer, offset, bytes, 0, n);
    if (n < bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(n));
      this.gpu.queue.writeBuffer(buffer, offset + n, tail);
    }
  }

  /** Copies `bytes` bytes from a buffer to the host, waiting for all recorded work. */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.#check("read");
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.gpu.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.#encoderNoPass().copyBufferToBuffer(buffer, offset, staging, 0, size);
    this.flush();
    try {
      // The timestamps were submitted with (or before) this copy, so reading them adds no wait.
      await Promise.all([staging.mapAsync(GPUMapMode.READ), this.profiler?.collect(), this.tuner?.collect()]);
      this.throwIfErrors("read");
      // The mapped range is detached by unmap(), so copy it out first.
      const res = staging.getMappedRange(0, size).slice(0, bytes);
      staging.unmap();
      return res;
    } finally {
      staging.destroy();
    }
  }

  /** Waits until the GPU has finished everything submitted so far. */
  async sync(): Promise<void> {
    this.flush();
    await Promise.all([
      this.gpu.queue.onSubmittedWorkDone(),
      this.profiler?.collect(),
      this.tuner?.collect(),
    ]);
    this.throwIfErrors("sync");
  }

  /** Throws the first validation/out-of-memory error WebGPU reported since the last check. */
  throwIfErrors(what: string): void {
    if (this.#errors.length) {
      const e = this.#errors.splice(0);
      throw new Error(`${what}: WebGPU reported ${e.length} error(s): ${e[0]}`);
    }
  }

  /** Frees pooled buffers that no tensor holds (after submitting pending work). */
  trim(): void {
    this.flush();
    // Cached bind groups may name the buffers about to be destroyed.
    this.#groups.clear();
    this.pool.trim();
  }

  /** Destroys the device; tensors on it become unusable. */
  destroy(): void {
    if (this.#destroyed) return;
    this.flush();
    this.#destroyed = true;
    this.#groups.clear();
    this.pool.trim();
    this.#arena.destroy();
    this.profiler?.destroy();
    this.tuner?.destroy();
    this.gpu.destroy();
  }

  /** Whether {@link destroy} was called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }
}

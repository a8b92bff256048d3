/**
 * @file Finding a WebGPU adapter and opening a GPUDevice on it: the adapter list, the choice by option or
 * environment, the request for the adapter's full limits and optional features, and the kernel profile that
 * suits the adapter. `Device` (core/device.ts) wraps the result.
 */

/** Kernel tuning profile: "cpu" for software adapters, "gpu" otherwise (see `DeviceOptions.profile`). */
export type KernelProfile = "cpu" | "gpu";

/** Options of the adapter choice and the device request (part of `DeviceOptions`). */
export interface AdapterOptions {
  /**
   * Preferred adapter: a substring of its description/vendor/architecture (case-insensitive) or an index
   * into the candidate list (`listAdapters()`). Defaults to env `CSN_WEBGPU_ADAPTER`, else the first.
   */
  adapter?: string | number;
  /** Use the fallback (software) adapter. Defaults to env `CSN_WEBGPU_FALLBACK=1`. */
  fallback?: boolean;
  /** Ask for the `subgroups` feature (default true; silently dropped when the adapter refuses it). */
  subgroups?: boolean;
}

const INSTALL_HINT = "Install a Vulkan driver: on Debian/Ubuntu without a GPU, Mesa's software driver " +
  "(`apt-get install -y mesa-vulkan-drivers libvulkan1`); with an NVIDIA GPU, its Vulkan ICD " +
  "(e.g. `libnvidia-gl-*` / `nvidia-vulkan-icd`).";

/** Lists the distinct adapters Deno exposes (by power preference and the fallback one). */
export async function listAdapters(): Promise<GPUAdapter[]> {
  const gpu = (globalThis.navigator as { gpu?: GPU }).gpu;
  if (!gpu) {
    throw new Error(`WebGPU is not available in this runtime (navigator.gpu is missing). ${INSTALL_HINT}`);
  }
  const out: GPUAdapter[] = [];
  const seen = new Set<string>();
  const tries: GPURequestAdapterOptions[] = [
    { powerPreference: "high-performance" },
    { powerPreference: "low-power" },
    { forceFallbackAdapter: true },
  ];
  for (const opt of tries) {
    let a: GPUAdapter | null = null;
    try {
      a = await gpu.requestAdapter(opt);
    } catch {
      a = null;
    }
    if (!a) continue;
    const key = `${a.info.vendor}|${a.info.device}|${a.info.description}|${a.info.isFallbackAdapter}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(a);
  }
  return out;
}

function describe(a: GPUAdapter, i: number): string {
  return `#${i} "${a.info.description || a.info.vendor}"${a.info.isFallbackAdapter ? " (fallback)" : ""}`;
}

/**
 * An environment variable, or undefined where there is none to read: feature-detected so that the engine also
 * loads where there is no Deno namespace (browsers) or no env permission.
 */
export function env(k: string): string | undefined {
  const deno = (globalThis as { Deno?: { env?: { get(k: string): string | undefined } } }).Deno;
  try {
    return deno?.env?.get(k);
  } catch {
    return undefined;
  }
}

/** Whether a switch variable is on ("1" or "true", any case); false where env cannot be read. */
export function envFlag(k: string): boolean {
  return /^(1|true)$/i.test(env(k) ?? "");
}

/** The adapter chosen by `opts`, else by env `CSN_WEBGPU_FALLBACK` / `CSN_WEBGPU_ADAPTER`, else the first. */
export async function selectAdapter(opts: AdapterOptions = {}): Promise<GPUAdapter> {
  const adapters = await listAdapters();
  if (adapters.length === 0) throw new Error(`No WebGPU adapter found. ${INSTALL_HINT}`);
  const fallback = opts.fallback ?? env("CSN_WEBGPU_FALLBACK") === "1";
  let want: string | number | undefined = opts.adapter ?? env("CSN_WEBGPU_ADAPTER");
  if (typeof want === "string" && /^\d+$/.test(want)) want = Number(want);
  let adapter: GPUAdapter | undefined;
  if (fallback) {
    adapter = adapters.find((a) => a.info.isFallbackAdapter);
    if (!adapter) {
      throw new Error(
        `No fallback WebGPU adapter; found ${adapters.map(describe).join(", ")}. ${INSTALL_HINT}`,
      );
    }
  } else if (typeof want === "number") {
    adapter = adapters[want];
    if (!adapter) throw new Error(`No WebGPU adapter #${want}; found ${adapters.map(describe).join(", ")}`);
  } else if (typeof want === "string" && want !== "") {
    const w = want.toLowerCase();
    adapter = adapters.find((a) =>
      `${a.info.description} ${a.info.vendor} ${a.info.architecture}`.toLowerCase().includes(w)
    );
    if (!adapter) {
      throw new Error(`No WebGPU adapter matches "${want}"; found ${adapters.map(describe).join(", ")}`);
    }
  } else {
    adapter = adapters[0];
  }
  return adapter;
}

/**
 * Requests a device with the adapter's maximum limits and the optional features it has (and `subgroups`
 * unless `opts.subgroups` is false); `subgroups` says whether that feature was granted.
 */
export async function requestDevice(
  adapter: GPUAdapter,
  opts: AdapterOptions = {},
): Promise<{ gpu: GPUDevice; subgroups: boolean }> {
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, number>)[key];
    if (typeof v === "number") requiredLimits[key] = v;
  }
  const features: string[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
    if (adapter.features.has(f)) features.push(f);
  }
  let gpu: GPUDevice | undefined;
  let subgroups = false;
  if (opts.subgroups ?? true) {
    // Deno's wgpu hides "subgroups" from adapter.features but grants it on request (see webgpu-notes §3.4).
    try {
      gpu = await adapter.requestDevice({
        requiredFeatures: [...features, "subgroups"] as GPUFeatureName[],
        requiredLimits,
      });
      subgroups = true;
    } catch {
      gpu = undefined;
    }
  }
  if (!gpu) {
    gpu = await adapter.requestDevice({ requiredFeatures: features as GPUFeatureName[], requiredLimits });
  }
  return { gpu, subgroups };
}

/**
 * The profile that suits an adapter: "cpu" for the fallback (software) one, "gpu" otherwise; env `CSN_KERNELS`
 * ("cpu" or "gpu") overrides it, e.g. to run the GPU kernels on lavapipe (`GPU_SMOKE=1 bash bench/gpu.sh`).
 */
export function defaultProfile(adapter: GPUAdapter): KernelProfile {
  const forced = env("CSN_KERNELS");
  if (forced === "cpu" || forced === "gpu") return forced;
  if (forced) throw new Error(`CSN_KERNELS must be "cpu" or "gpu", got "${forced}"`);
  return adapter.info.isFallbackAdapter ? "cpu" : "gpu";
}

/**
 * How many dispatches a device records before it submits them (see `DeviceOptions.submitEvery`): 128 on a
 * GPU, so that it starts on a step's first kernels while the host records the rest; 0 (submit only where
 * needed) on a software adapter, where lavapipe ran the tiny segmentor's step 1.0 s -> 1.6-1.8 s when
 * submitting every 128. Env `CSN_SUBMIT_EVERY` overrides it (for measuring).
 */
export function defaultSubmitEvery(adapter: GPUAdapter): number {
  const forced = env("CSN_SUBMIT_EVERY");
  if (forced !== undefined) {
    const n = Number(forced);
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`CSN_SUBMIT_EVERY must be an integer >= 0, got "${forced}"`);
    }
    return n;
  }
  return adapter.info.isFallbackAdapter ? 0 : 128;
}

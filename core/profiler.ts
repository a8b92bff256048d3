/**
 * @file Per-kernel GPU timing with the `timestamp-query` feature (`CSN_PROFILE=1`).
 *
 * When profiling is on, the device gives every dispatch its own compute pass whose beginning and end write
 * GPU timestamps into a query set. At each submission the queries are resolved and copied into a mappable
 * buffer; the device maps those buffers alongside its next read or sync (whose wait covers them), so the
 * normal path gains no extra GPU wait. Times are summed per kernel name (the `op` a kernel launches under)
 * and printed by {@link Profiler.report} with their GFLOP/s (when the dispatch gave a FLOP estimate) or
 * GB/s (estimated bytes, else the bytes of the bound storage).
 */
import { envFlag } from "./adapter.ts";
import { TimestampLog } from "./timestamps.ts";

/** Work estimate of one dispatch, for the profile's rates. */
export interface KernelWork {
  /** Floating-point operations (an FMA counts 2). */
  flops?: number;
  /** Bytes read plus written; defaults to the sum of the dispatch's storage binding sizes. */
  bytes?: number;
}

/** Profile totals of one kernel name. */
export interface KernelStat {
  name: string;
  /** Dispatches timed. */
  count: number;
  /** GPU milliseconds summed over the dispatches. */
  ms: number;
  /** Fraction of all profiled GPU time. */
  share: number;
  /** FLOPs summed over the dispatches that gave an estimate (0 if none did). */
  flops: number;
  /** Bytes summed over the dispatches (estimated or bound). */
  bytes: number;
  /** FLOP rate over the dispatches with a FLOP estimate, in GFLOP/s; null if none had one. */
  gflops: number | null;
  /** Byte rate in GB/s. */
  gbs: number;
}

interface Entry {
  name: string;
  flops: number | null;
  bytes: number;
  /** The {@link Profiler.reset} generation it was recorded in; earlier ones are not counted. */
  gen: number;
}

interface Acc {
  count: number;
  ns: number;
  flops: number;
  flopNs: number;
  bytes: number;
}

/** Collects per-dispatch GPU timestamps of one device (see the file comment); made by `openDevice`. */
export class Profiler {
  #log: TimestampLog<Entry>;
  #acc = new Map<string, Acc>();
  #keys = new Map<string, string>();
  #gen = 0;

  /** Wraps a device that was granted `timestamp-query`. */
  constructor(gpu: GPUDevice) {
    this.#log = new TimestampLog(gpu, "Profiler");
  }

  /** Query sets created so far (each holds 2048 dispatches and is reused once read). */
  get querySets(): number {
    return this.#log.querySets;
  }

  /** Whether the current submission's query set is full (the device then submits before the next dispatch). */
  get full(): boolean {
    return this.#log.full;
  }

  /** Dispatches recorded but not yet read back. */
  get pending(): number {
    return this.#log.pending;
  }

  /**
   * The descriptor of a compute pass that times one dispatch of `name` running `source`; `boundBytes` backs a
   * missing byte estimate. The profile's key is the name plus the kernel's storage bindings, e.g.
   * `F.conv3d [a,b,c]` (a GEMM) apart from `F.conv3d [s,out]` (an im2col), since one op runs several kernels.
   */
  passDescriptor(
    name: string,
    source: string,
    boundBytes: number,
    work?: KernelWork,
  ): GPUComputePassDescriptor {
    let key = this.#keys.get(source);
    if (key === undefined) {
      key = kernelKey(name, source);
      this.#keys.set(source, key);
    }
    const entry = { name: key, flops: work?.flops ?? null, bytes: work?.bytes ?? boundBytes, gen: this.#gen };
    return { label: name, timestampWrites: this.#log.writes(entry) };
  }

  /** Records the resolve and copy of this submission's timestamps at the end of `encoder` (outside any pass). */
  resolve(encoder: GPUCommandEncoder): void {
    this.#log.resolve(encoder);
  }

  /** Maps the submitted timestamp buffers and adds them to the totals (the device calls it at read and sync). */
  async collect(): Promise<void> {
    for (const { tag: e, ns } of await this.#log.collect()) {
      if (e.gen !== this.#gen) continue;
      let a = this.#acc.get(e.name);
      if (!a) this.#acc.set(e.name, a = { count: 0, ns: 0, flops: 0, flopNs: 0, bytes: 0 });
      a.count++;
      a.ns += ns;
      a.bytes += e.bytes;
      if (e.flops !== null) {
        a.flops += e.flops;
        a.flopNs += ns;
      }
    }
  }

  /** Totals per kernel name read so far, longest first. */
  stats(): KernelStat[] {
    let total = 0;
    for (const a of this.#acc.values()) total += a.ns;
    return [...this.#acc.entries()].map(([name, a]) => ({
      name,
      count: a.count,
      ms: a.ns / 1e6,
      share: total > 0 ? a.ns / total : 0,
      flops: a.flops,
      bytes: a.bytes,
      gflops: a.flopNs > 0 ? a.flops / a.flopNs : null,
      gbs: a.ns > 0 ? a.bytes / a.ns : 0,
    })).sort((x, y) => y.ms - x.ms);
  }

  /** Forgets the totals and every dispatch recorded so far (e.g. after a warm-up step). */
  reset(): void {
    this.#acc.clear();
    this.#gen++;
  }

  /**
   * A table of the `top` kernels by GPU time (after reading everything submitted): count, ms, share, and
   * GFLOP/s or GB/s, with a line for the rest and the total.
   */
  async report(top = 10): Promise<string> {
    await this.collect();
    const s = this.stats();
    const total = s.reduce((t, k) => t + k.ms, 0);
    const w = [44, 7, 10, 6, 16];
    const row = (c: string[]) =>
      c.map((x, i) => (i === 0 ? x.slice(0, w[0]).padEnd(w[0]) : x.padStart(w[i]))).join("  ");
    const lines = [row(["kernel", "count", "ms", "share", "rate"])];
    for (const k of s.slice(0, top)) {
      const rate = k.gflops !== null ? `${sig3(k.gflops)} GFLOP/s` : `${sig3(k.gbs)} GB/s`;
      lines.push(row([k.name, String(k.count), k.ms.toFixed(2), `${(100 * k.share).toFixed(1)}%`, rate]));
    }
    const rest = s.slice(top);
    if (rest.length) {
      const ms = rest.reduce((t, k) => t + k.ms, 0);
      lines.push(row([
        `(${rest.length} others)`,
        String(rest.reduce((t, k) => t + k.count, 0)),
        ms.toFixed(2),
        `${total > 0 ? (100 * ms / total).toFixed(1) : "0.0"}%`,
        "",
      ]));
    }
    lines.push(row(["total", String(s.reduce((t, k) => t + k.count, 0)), total.toFixed(2), "100%", ""]));
    return lines.join("\n");
  }

  /** Frees the query sets and buffers. */
  destroy(): void {
    this.#log.destroy();
  }
}

/** `name [bindings]`: the storage binding names of the WGSL, windows (`x_0`, `x_1`) counted once. */
function kernelKey(name: string, source: string): string {
  const names = [...source.matchAll(/var<storage[^>]*>\s*(\w+)\s*:/g)].map((m) => m[1].replace(/_\d+$/, ""));
  return names.length ? `${name} [${[...new Set(names)].join(",")}]` : name;
}

/** Three significant digits (rates span 0.001 to 1000 between kernels). */
function sig3(v: number): string {
  return v >= 100 ? v.toFixed(0) : v.toPrecision(3);
}

/** Whether env `CSN_PROFILE` asks for profiling ("1"/"true"); false where env access is not allowed. */
export function profilingRequested(): boolean {
  return envFlag("CSN_PROFILE");
}

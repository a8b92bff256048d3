/**
 * @file A pool of storage buffers keyed by size class. Freed buffers go back to a free list of their class and
 * are handed out again, so a training loop that allocates the same shapes every step creates no new buffers
 * after its first step. Classes have four steps per octave, so at most ~19 % of a buffer is slack.
 *
 * Each class hands out its oldest free buffer (lowest creation number), so which buffer a tensor gets depends
 * only on which are free, not on the order they were released in. A training step then binds the same buffers
 * every step, and the device's bind-group cache hits (with last-in-first-out the release order permutes them).
 *
 * Buffers may still be referenced by commands that are encoded but not yet submitted; the pool never destroys
 * a buffer on its own (only `trim()` does, and the device flushes before calling it).
 */

/** Byte counts a pool reports. `live` counts buffers held by tensors, `pooled` the free ones kept for reuse. */
export interface PoolStats {
  /** Bytes of buffers currently held by live tensors (size-class bytes). */
  liveBytes: number;
  /** Highest `liveBytes` seen. */
  peakBytes: number;
  /** Bytes of free buffers kept for reuse. */
  pooledBytes: number;
  /** Number of buffers currently held by live tensors. */
  liveBuffers: number;
  /** Number of `createBuffer` calls so far. */
  created: number;
}

/** Rounds a byte count up to its size class: 256 B minimum, then 4 classes per power of two, 256-aligned. */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const p = 2 ** Math.floor(Math.log2(bytes));
  const step = p / 4;
  const c = Math.ceil(bytes / step) * step;
  return Math.ceil(c / 256) * 256;
}

/** Size-class buffer pool for one GPUDevice. */
export class BufferPool {
  /** Free buffers of each class, newest first, so that pop() hands out the oldest. */
  #free = new Map<number, GPUBuffer[]>();
  #order = new WeakMap<GPUBuffer, number>();
  #stats: PoolStats = { liveBytes: 0, peakBytes: 0, pooledBytes: 0, liveBuffers: 0, created: 0 };

  constructor(
    private readonly gpu: GPUDevice,
    private readonly usage: number,
    private readonly maxBufferSize: number,
  ) {}

  /** Returns a buffer of at least `bytes` bytes (its size is the size class). */
  acquire(bytes: number, what: string): GPUBuffer {
    if (bytes > this.maxBufferSize) {
      throw new Error(
        `${what}: needs a buffer of ${bytes} bytes, over the device's maxBufferSize of ${this.maxBufferSize} bytes`,
      );
    }
    const size = this.#classOf(bytes);
    const list = this.#free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.#stats.pooledBytes -= size;
    } else {
      buf = this.gpu.createBuffer({ size, usage: this.usage });
      this.#order.set(buf, this.#stats.created++);
    }
    this.#stats.liveBytes += size;
    this.#stats.liveBuffers++;
    if (this.#stats.liveBytes > this.#stats.peakBytes) this.#stats.peakBytes = this.#stats.liveBytes;
    return buf;
  }

  /** Gives a buffer obtained from `acquire(bytes)` back for reuse. */
  release(buf: GPUBuffer, bytes: number): void {
    const size = this.#classOf(bytes);
    this.#stats.liveBytes -= size;
    this.#stats.liveBuffers--;
    this.#stats.pooledBytes += size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    const n = this.#order.get(buf) ?? Infinity;
    let lo = 0, hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#order.get(list[mid]) ?? Infinity) > n) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, buf);
  }

  #classOf(bytes: number): number {
    // The largest class is capped at maxBufferSize so that every request up to the limit has a class.
    return Math.min(sizeClass(bytes), this.maxBufferSize);
  }

  /** Destroys every free buffer. Call only when no unsubmitted command references them. */
  trim(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
    this.#stats.pooledBytes = 0;
  }

  /** Starts a new peak from the bytes live now (to measure one step's high-water mark). */
  resetPeak(): void {
    this.#stats.peakBytes = this.#stats.liveBytes;
  }

  /** A snapshot of the byte counts. */
  stats(): PoolStats {
    return { ...this.#stats };
  }
}

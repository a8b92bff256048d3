/**
 * @file GPU timestamps of tagged compute passes, read back without a wait of their own.
 *
 * A pass that asks for {@link TimestampLog.writes} gets a pair of slots in the current query set; at each
 * submission the device records {@link TimestampLog.resolve} (resolve the query set, copy it into a mappable
 * buffer), and at its next read or sync it awaits {@link TimestampLog.collect} beside that wait, which hands
 * back each pass's tag and GPU nanoseconds. The per-kernel profile (`CSN_PROFILE`) and the tile tuner
 * (`CSN_BENCHMARK`) each keep one.
 */

/** Timestamps per query set (2 per pass); WebGPU caps a query set at 4096 queries. */
const QUERIES = 4096;

interface Batch<T> {
  querySet: GPUQuerySet;
  resolve: GPUBuffer;
  readback: GPUBuffer;
  tags: T[];
}

/** One timed pass as read back: its tag and its GPU time. */
export interface Timed<T> {
  tag: T;
  ns: number;
}

/** Query sets of tagged pass timestamps, reused once read (see the file comment). */
export class TimestampLog<T> {
  #gpu: GPUDevice;
  #free: Batch<T>[] = [];
  #current: Batch<T> | null = null;
  #inFlight: Batch<T>[] = [];
  #querySets = 0;

  /** Wraps a device that was granted `timestamp-query`. */
  constructor(gpu: GPUDevice, who: string) {
    if (!gpu.features.has("timestamp-query")) {
      throw new Error(`${who}: the device lacks the timestamp-query feature`);
    }
    this.#gpu = gpu;
  }

  /** Query sets created so far (each holds 2048 passes). */
  get querySets(): number {
    return this.#querySets;
  }

  /** Whether the current query set is full (the device then submits before the next timed pass). */
  get full(): boolean {
    return this.#current !== null && this.#current.tags.length * 2 >= QUERIES;
  }

  /** Passes recorded but not yet read back. */
  get pending(): number {
    return (this.#current?.tags.length ?? 0) + this.#inFlight.reduce((s, b) => s + b.tags.length, 0);
  }

  /** The `timestampWrites` of one pass tagged `tag`. */
  writes(tag: T): GPUComputePassTimestampWrites {
    const b = this.#current ??= this.#batch();
    const i = b.tags.length;
    b.tags.push(tag);
    return { querySet: b.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  #batch(): Batch<T> {
    const b = this.#free.pop();
    if (b) return b;
    this.#querySets++;
    return {
      querySet: this.#gpu.createQuerySet({ type: "timestamp", count: QUERIES }),
      resolve: this.#gpu.createBuffer({
        size: QUERIES * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      }),
      readback: this.#gpu.createBuffer({
        size: QUERIES * 8,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      }),
      tags: [],
    };
  }

  /** Records the resolve and copy of this submission's timestamps at the end of `encoder` (outside any pass). */
  resolve(encoder: GPUCommandEncoder): void {
    const b = this.#current;
    if (!b || b.tags.length === 0) return;
    const n = 2 * b.tags.length;
    encoder.resolveQuerySet(b.querySet, 0, n, b.resolve, 0);
    encoder.copyBufferToBuffer(b.resolve, 0, b.readback, 0, n * 8);
    this.#inFlight.push(b);
    this.#current = null;
  }

  /** Maps the submitted timestamp buffers and returns their passes in recording order. */
  async collect(): Promise<Timed<T>[]> {
    const batches = this.#inFlight.splice(0);
    await Promise.all(batches.map((b) => b.readback.mapAsync(GPUMapMode.READ)));
    const out: Timed<T>[] = [];
    for (const b of batches) {
      const t = new BigUint64Array(b.readback.getMappedRange(0, 2 * b.tags.length * 8));
      // Timestamps are nanoseconds; a pass whose end reads before its start (counter reset) counts 0.
      b.tags.forEach((tag, i) =>
        out.push({ tag, ns: t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0 })
      );
      b.readback.unmap();
      b.tags = [];
      this.#free.push(b);
    }
    return out;
  }

  /** Frees the query sets and buffers. */
  destroy(): void {
    for (const b of [...this.#free, ...this.#inFlight, ...(this.#current ? [this.#current] : [])]) {
      b.querySet.destroy();
      b.resolve.destroy();
      b.readback.destroy();
    }
    this.#free = [];
    this.#inFlight = [];
    this.#current = null;
  }
}

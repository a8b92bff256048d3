/**
 * @file The prefetching loader: batches of sample jobs are handed to a pool of Workers ahead of time, so
 * reading the cache and augmenting overlap the device's work on the previous batches. The trainer asks for
 * batches in order and the loader measures how long it had to wait for them (the data-wait share).
 */
import { runJob, type SampleJob, type SampleResult } from "./samples.ts";

/** A pool of loader Workers (or the main thread when `workers` is 0). */
export class WorkerPool {
  #workers: Worker[] = [];
  #pending = new Map<number, { resolve: (r: SampleResult) => void; reject: (e: Error) => void }>();
  #next = 0;
  #rr = 0;

  constructor(readonly workers: number) {
    for (let i = 0; i < workers; i++) {
      const w = new Worker(new URL("./loader_worker.ts", import.meta.url), { type: "module" });
      w.onmessage = (e: MessageEvent<{ id: number; result?: SampleResult; error?: string }>) => {
        const p = this.#pending.get(e.data.id);
        if (!p) return;
        this.#pending.delete(e.data.id);
        if (e.data.error !== undefined) p.reject(new Error(e.data.error));
        else p.resolve(e.data.result!);
      };
      w.onerror = (e) => {
        e.preventDefault();
        for (const p of this.#pending.values()) p.reject(new Error(`loader worker failed: ${e.message}`));
        this.#pending.clear();
      };
      this.#workers.push(w);
    }
  }

  /** Builds one sample. */
  run(job: SampleJob): Promise<SampleResult> {
    if (!this.#workers.length) return runJob(job);
    const id = this.#next++;
    const w = this.#workers[this.#rr++ % this.#workers.length];
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.postMessage({ id, job });
    });
  }

  /** Stops the Workers. */
  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
  }
}

/** Batches in order, `depth` of them requested ahead. */
export class Prefetcher {
  #queue: Promise<SampleResult[]>[] = [];
  #i = 0;
  /** Milliseconds spent waiting in {@link next}. */
  waitMs = 0;

  /** `jobsOf(i)` gives the jobs of batch i (null past the end). */
  constructor(
    readonly pool: WorkerPool,
    readonly jobsOf: (i: number) => SampleJob[] | null,
    readonly depth = 2,
  ) {
    for (let k = 0; k < depth; k++) this.#enqueue();
  }

  #enqueue(): void {
    const jobs = this.jobsOf(this.#i++);
    if (!jobs) return;
    const p = Promise.all(jobs.map((j) => this.pool.run(j)));
    p.catch(() => {}); // surfaced by next(); avoids an unhandled rejection while queued
    this.#queue.push(p);
  }

  /** The next batch (null when the jobs ran out). */
  async next(): Promise<SampleResult[] | null> {
    const p = this.#queue.shift();
    if (!p) return null;
    this.#enqueue();
    const t = performance.now();
    const r = await p;
    this.waitMs += performance.now() - t;
    return r;
  }
}

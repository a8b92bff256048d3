/**
 * @file Data-parallel replicas: one process per adapter (launched by `mpirun`), identical weights, each on
 * its share of every batch. A step is recorded once in JavaScript (forward, backward, optimizer) with the
 * device queue held back, then replayed: the held command buffers are submitted in order and, at each
 * synchronisation point, the host reads what the GPU produced so far, reduces it across replicas over MPI,
 * and writes the result back before the work that needs it is submitted. That keeps the models' synchronous
 * `forward` and autograd's synchronous `backward` unchanged while batch-norm statistics (SyncBN) and the
 * gradients cross processes mid-step.
 *
 * Waits per step: one per gradient bucket (they resolve together and their all-reduces are queued one after
 * the other while the next bucket is read), plus, with SyncBN, one per batch-norm layer in forward and one in
 * backward (each layer's statistics are needed before the next layer can run; that chain cannot be batched).
 */
import type { Device } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import { keep, tidy } from "../core/scope.ts";
import type { Module } from "../nn/module.ts";
import { BatchNorm3d } from "../nn/layers.ts";
import type { BatchNormSync } from "../kernels/norm/mod.ts";
import type { Mpi } from "./mpi.ts";
import { downloadTensors } from "../io/download.ts";

type Op =
  | { kind: "write"; buffer: GPUBuffer; offset: number; data: Uint8Array<ArrayBuffer> }
  | { kind: "submit"; cbs: GPUCommandBuffer[] }
  | { kind: "sync"; blocking: boolean; run: () => Promise<void> }
  | { kind: "barrier" };

/** Holds back a device's queue writes and submissions while a step is recorded, then replays them. */
class QueueRecorder {
  ops: Op[] = [];
  recording = false;
  readonly #queue: GPUQueue;
  readonly #submit: GPUQueue["submit"];
  readonly #writeBuffer: GPUQueue["writeBuffer"];

  constructor(readonly device: Device) {
    this.#queue = device.gpu.queue;
    this.#submit = this.#queue.submit.bind(this.#queue);
    this.#writeBuffer = this.#queue.writeBuffer.bind(this.#queue);
  }

  start(): void {
    this.device.flush();
    this.ops = [];
    this.recording = true;
    const q = this.#queue as unknown as Record<string, unknown>;
    q.submit = (cbs: Iterable<GPUCommandBuffer>) => void this.ops.push({ kind: "submit", cbs: [...cbs] });
    q.writeBuffer = (
      buffer: GPUBuffer,
      offset: number,
      data: BufferSource,
      dataOffset = 0,
      size?: number,
    ) => {
      // The engine reuses its host staging (the uniform arena), so the bytes are copied now.
      const view = ArrayBuffer.isView(data) ? data : new Uint8Array(data as ArrayBuffer);
      const bpe = (view as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
      const start = view.byteOffset + dataOffset * bpe;
      const len = size !== undefined ? size * bpe : view.byteLength - dataOffset * bpe;
      const bytes = new Uint8Array(view.buffer as ArrayBuffer, start, len).slice();
      this.ops.push({ kind: "write", buffer, offset, data: bytes });
    };
  }

  stop(): void {
    const q = this.#queue as unknown as Record<string, unknown>;
    delete q.submit;
    delete q.writeBuffer;
    this.recording = false;
  }

  /** Cuts the recording here and runs `run` at this point of the replay. */
  syncPoint(blocking: boolean, run: () => Promise<void>): void {
    this.device.flush();
    this.ops.push({ kind: "sync", blocking, run });
  }

  barrier(): void {
    this.device.flush();
    this.ops.push({ kind: "barrier" });
  }

  /** A real (not recorded) upload, for use during replay. */
  write(buffer: GPUBuffer, offset: number, data: Float32Array): void {
    this.#writeBuffer(buffer, offset, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  }

  async replay(): Promise<{ waits: number }> {
    const pending: Promise<void>[] = [];
    let waits = 0;
    try {
      for (const op of this.ops) {
        if (op.kind === "write") this.#writeBuffer(op.buffer, op.offset, op.data);
        else if (op.kind === "submit") this.#submit(op.cbs);
        else if (op.kind === "sync") {
          waits++;
          if (op.blocking) await op.run();
          else pending.push(op.run());
        } else await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
    } finally {
      this.ops = [];
    }
    this.device.throwIfErrors("replicas.step");
    return { waits };
  }
}

/** Reads `bytes` of a MAP_READ staging buffer (already filled by submitted work) and destroys it. */
async function drain(staging: GPUBuffer, bytes: number): Promise<Float32Array> {
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
  staging.unmap();
  staging.destroy();
  return out;
}

/** The f32 tensors' values end to end, read with one GPU wait (outside the replayed steps). */
async function readAll(ts: Tensor[]): Promise<Float32Array> {
  const host = await downloadTensors(ts);
  const out = new Float32Array(ts.reduce((n, t) => n + t.numel(), 0));
  let off = 0;
  for (const h of host) {
    out.set(h.data as Float32Array, off);
    off += h.data.length;
  }
  return out;
}

function stagingBuffer(device: Device, bytes: number): GPUBuffer {
  return device.gpu.createBuffer({
    size: Math.max(4, Math.ceil(bytes / 4) * 4),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
}

/** Options of {@link Replicas}. */
export interface ReplicasOptions {
  /** Reduce batch-norm statistics across replicas (default true when there are several). */
  syncBN?: boolean;
  /** Gradient bucket size in bytes (default 25 MiB, as PyTorch DDP). */
  bucketBytes?: number;
}

/** What one {@link Replicas.step} did. */
export interface StepResult {
  /** The loss averaged over replicas (the global batch's mean loss). */
  loss: number;
  /** Whether some replica asked to stop (a signal); every replica sees the same answer. */
  stop: boolean;
  /** Host synchronisation points (GPU waits) in the step. */
  waits: number;
  /** Milliseconds spent waiting in those synchronisation points. */
  syncMs: number;
}

/**
 * This process's replica in an MPI world: steps whose gradients are averaged over all replicas (and whose
 * batch-norm statistics are shared with SyncBN), and a weight checksum to prove the replicas still agree.
 */
export class Replicas {
  readonly rank: number;
  readonly world: number;
  readonly syncBN: boolean;
  readonly bucketBytes: number;
  #rec: QueueRecorder;
  #syncMs = 0;

  constructor(readonly mpi: Mpi, readonly device: Device, opts: ReplicasOptions = {}) {
    this.rank = mpi.rank;
    this.world = mpi.size;
    this.syncBN = opts.syncBN ?? this.world > 1;
    this.bucketBytes = opts.bucketBytes ?? 25 * 1024 * 1024;
    this.#rec = new QueueRecorder(device);
  }

  /** Routes every BatchNorm3d of `model` through this world's reductions (PyTorch's convert_sync_batchnorm). */
  convertSyncBatchNorm(model: Module): number {
    let n = 0;
    const visit = (m: Module) => {
      if (m instanceof BatchNorm3d) m.sync = this.#bnSync(), n++;
      for (const [, c] of m.namedChildren()) visit(c);
    };
    if (this.syncBN && this.world > 1) visit(model);
    return n;
  }

  #timed(run: () => Promise<void>): () => Promise<void> {
    return async () => {
      const t = performance.now();
      await run();
      this.#syncMs += performance.now() - t;
    };
  }

  #bnSync(): BatchNormSync {
    const op = "SyncBatchNorm";
    return {
      stats: (local, count) => {
        const d = this.device, C = local.shape[0];
        if (!this.#rec.recording) throw new Error(`${op}: training steps must run through Replicas.step`);
        const staging = stagingBuffer(d, 8 * C);
        d.copy(local.storage(op).buffer, 0, staging, 0, 8 * C);
        const mean = Tensor.empty(d, [C], "f32", op), variance = Tensor.empty(d, [C], "f32", op);
        const mb = mean.storage(op).buffer, vb = variance.storage(op).buffer;
        const world = this.world;
        this.#rec.syncPoint(
          true,
          this.#timed(async () => {
            const h = await drain(staging, 8 * C);
            // Each replica's exact (count, mean, M2) becomes sums of n*mean and M2 + n*mean^2 in f64.
            const red = new Float64Array(2 * C + 1);
            red[2 * C] = count;
            for (let c = 0; c < C; c++) {
              const m = h[2 * c], m2 = h[2 * c + 1];
              red[c] = count * m;
              red[C + c] = m2 + count * m * m;
            }
            this.mpi.allreduceSync(red);
            const n = red[2 * C];
            if (n !== count * world) {
              throw new Error(
                `${op}: replicas normalised different batch sizes (${n} values, expected ${count * world})`,
              );
            }
            const mu = new Float32Array(C), va = new Float32Array(C);
            for (let c = 0; c < C; c++) {
              const m = red[c] / n;
              mu[c] = m;
              va[c] = Math.max(red[C + c] / n - m * m, 0);
            }
            this.#rec.write(mb, 0, mu);
            this.#rec.write(vb, 0, va);
          }),
        );
        return { mean, variance, count: count * world };
      },
      sum: (local) => {
        const d = this.device, n = local.numel();
        const staging = stagingBuffer(d, 4 * n);
        d.copy(local.storage(op).buffer, 0, staging, 0, 4 * n);
        const out = Tensor.empty(d, [...local.shape], "f32", op);
        const ob = out.storage(op).buffer;
        this.#rec.syncPoint(
          true,
          this.#timed(async () => {
            const h = await drain(staging, 4 * n);
            const red = Float64Array.from(h);
            this.mpi.allreduceSync(red);
            this.#rec.write(ob, 0, Float32Array.from(red));
          }),
        );
        return out;
      },
    };
  }

  /**
   * One data-parallel step: `forward` builds this replica's loss (called in a tidy scope), backward runs,
   * gradients are averaged over replicas in buckets (last parameters first), then `update` (clipping and
   * the optimizer) runs on the averaged gradients. `stop` is this replica's request to stop after the step.
   */
  async step(
    params: Tensor[],
    forward: () => Tensor,
    update: () => void,
    stop = false,
  ): Promise<StepResult> {
    const d = this.device, rec = this.#rec;
    this.#syncMs = 0;
    let lossT: Tensor | null = null;
    let head: Float32Array | null = null;
    rec.start();
    try {
      lossT = tidy(() => {
        const l = forward();
        if (l.numel() !== 1) throw new Error(`Replicas.step: the loss must be a scalar, got ${l.describe()}`);
        l.backward();
        return keep(l);
      });
      // Buckets in reverse parameter order (backward produces the last layers' gradients first).
      const order = params.map((_, i) => i).reverse();
      const buckets: number[][] = [[]];
      let bytes = 0;
      for (const i of order) {
        const p = params[i];
        if (!p.grad) throw new Error(`Replicas.step: parameter ${i} ${p.describe()} got no gradient`);
        if (bytes > 0 && bytes + 4 * p.numel() > this.bucketBytes) buckets.push([]), bytes = 0;
        buckets[buckets.length - 1].push(i);
        bytes += 4 * p.numel();
      }
      const world = this.world;
      buckets.forEach((b, bi) => {
        // Bucket 0 also carries the loss and the stop flag (2 floats up front).
        const extra = bi === 0 ? 2 : 0;
        const total = extra + b.reduce((s, i) => s + params[i].numel(), 0);
        const staging = stagingBuffer(d, 4 * total);
        let off = extra;
        if (bi === 0) d.copy(lossT!.storage("Replicas.step").buffer, 0, staging, 0, 4);
        const slots = b.map((i) => {
          const g = params[i].grad!, n = g.numel();
          d.copy(g.storage("Replicas.step").buffer, 0, staging, 4 * off, 4 * n);
          const slot = { buffer: g.storage("Replicas.step").buffer, off, n };
          off += n;
          return slot;
        });
        rec.syncPoint(
          false,
          this.#timed(async () => {
            const h = await drain(staging, 4 * total);
            if (bi === 0) h[1] = stop ? 1 : 0;
            if (world > 1) await this.mpi.allreduce(h);
            const inv = 1 / world;
            for (let k = extra; k < total; k++) h[k] *= inv;
            for (const s of slots) rec.write(s.buffer, 0, h.subarray(s.off, s.off + s.n));
            if (bi === 0) head = h.slice(0, 2);
          }),
        );
      });
      rec.barrier();
      tidy(update);
      d.flush();
    } catch (e) {
      rec.stop();
      lossT?.dispose();
      throw e;
    }
    rec.stop();
    const { waits } = await rec.replay();
    lossT.dispose();
    const h = head as Float32Array | null;
    if (!h) throw new Error("Replicas.step: the loss was not read back");
    return { loss: h[0] / this.world, stop: h[1] > 0, waits, syncMs: this.#syncMs };
  }

  /**
   * Makes every replica start from replica 0's parameters and buffers (as DDP does at construction), so a
   * model initialised from different random seeds per process still trains as one.
   */
  async broadcastState(model: Module): Promise<void> {
    if (this.world === 1) return;
    const d = this.device;
    const ts = Object.values(model.stateDict()).filter((t) => t.dtype === "f32");
    const h = await readAll(ts);
    // A sum where every replica but 0 contributes zeros is a broadcast.
    if (this.rank !== 0) h.fill(0);
    await this.mpi.allreduce(h);
    let off = 0;
    for (const t of ts) {
      d.write(t.storage("Replicas.broadcastState").buffer, 0, h.subarray(off, off + t.numel()));
      t.written();
      off += t.numel();
    }
  }

  /**
   * A 32-bit FNV-1a hash of every parameter's bytes on each replica (one readback); throws naming the
   * replicas whose weights differ from replica 0's.
   */
  async checksum(params: Tensor[], what = "weights"): Promise<number> {
    const b = new Uint8Array((await readAll(params)).buffer);
    let x = 0x811c9dc5;
    for (let i = 0; i < b.length; i++) x = Math.imul(x ^ b[i], 0x01000193);
    const mine = x >>> 0;
    const all = new Float64Array(this.world);
    all[this.rank] = mine;
    if (this.world > 1) await this.mpi.allreduce(all);
    const bad = [...all.keys()].filter((r) => all[r] !== all[0]);
    if (bad.length) {
      throw new Error(
        `replicas diverged: ${what} checksum of replica(s) ${bad.join(", ")} (${
          bad.map((r) => all[r].toString(16)).join(", ")
        }) differs from replica 0's (${all[0].toString(16)})`,
      );
    }
    return mine;
  }
}

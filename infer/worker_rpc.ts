/**
 * @file Requests to a module Worker, served in order, each answered by its own message: the study reader
 * (study_loader.ts) and the study writer (study_writer.ts) on the caller's side, {@link serveRequests} on the
 * Worker's.
 */

/** A request as posted, and its answer. */
type Request<Req> = { id: number; req: Req };
type Answer<Res> = { id: number; result?: Res; error?: string };

/**
 * The caller's side: `call` posts a request and resolves with the Worker's answer (or its error). With
 * `inWorker` false it runs `local` on this thread instead (tests, debugging).
 */
export class WorkerRpc<Req, Res> {
  #worker: Worker | null = null;
  #pending = new Map<number, { resolve: (r: Res) => void; reject: (e: Error) => void }>();
  #next = 0;

  /** `what` names the Worker in the error its crash gives every pending request. */
  constructor(
    url: URL,
    what: string,
    private readonly local: (req: Req) => Promise<Res>,
    inWorker = true,
  ) {
    if (!inWorker) return;
    this.#worker = new Worker(url, { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<Answer<Res>>) => {
      const p = this.#pending.get(e.data.id);
      if (!p) return;
      this.#pending.delete(e.data.id);
      if (e.data.error !== undefined) p.reject(new Error(e.data.error));
      else p.resolve(e.data.result!);
    };
    this.#worker.onerror = (e) => {
      e.preventDefault();
      for (const p of this.#pending.values()) p.reject(new Error(`${what} failed: ${e.message}`));
      this.#pending.clear();
    };
  }

  /** Posts `req` (handing over the `transfer` buffers) and waits for its answer. */
  call(req: Req, transfer: Transferable[] = []): Promise<Res> {
    if (!this.#worker) return this.local(req);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      if (!this.#worker) return reject(new Error("the Worker was closed"));
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, req } satisfies Request<Req>, { transfer });
    });
  }

  /** Stops the Worker. */
  close(): void {
    this.#worker?.terminate();
    this.#worker = null;
  }
}

/**
 * The Worker's side: answers each request with `handle`'s result (its `transfer` buffers handed over) or
 * with the message of what it threw.
 */
export function serveRequests<Req, Res>(
  handle: (req: Req) => Promise<{ result: Res; transfer?: Transferable[] }>,
): void {
  const scope = self as unknown as {
    onmessage: (e: MessageEvent<Request<Req>>) => void;
    postMessage: (m: Answer<Res>, o?: { transfer: Transferable[] }) => void;
  };
  scope.onmessage = async (e) => {
    const { id, req } = e.data;
    try {
      const { result, transfer = [] } = await handle(req);
      scope.postMessage({ id, result }, { transfer });
    } catch (err) {
      scope.postMessage({ id, error: (err as Error).message });
    }
  };
}

/** The distinct ArrayBuffers under some typed arrays (a transfer list must not name one twice). */
export function buffersOf(arrays: (ArrayBufferView | null | undefined)[]): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (const a of arrays) {
    const b = a?.buffer;
    if (b instanceof ArrayBuffer && !out.includes(b)) out.push(b);
  }
  return out;
}

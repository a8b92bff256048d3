/**
 * @file Open MPI through Deno's FFI: the few collectives data parallelism needs (sum all-reduce of f32 and
 * f64 host buffers, abort), on `libmpi.so.40` (Debian's Open MPI 4.1, package libopenmpi3). Shared memory
 * between ranks on one host and TCP/InfiniBand across hosts are Open MPI's choice (`--mca btl ...`).
 *
 * Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) are addresses of global objects, which Deno's
 * `dlopen` cannot take; libc's `dlsym` gives them. The library is first opened RTLD_GLOBAL through libc's
 * `dlopen`, because Open MPI's plugins resolve their symbols against it.
 */

/** True when this process was started by `mpirun`/`mpiexec` (Open MPI sets OMPI_COMM_WORLD_SIZE). */
export function underMpirun(): boolean {
  return Deno.env.get("OMPI_COMM_WORLD_SIZE") !== undefined;
}

const MPI_THREAD_SERIALIZED = 2;
const LIB = "libmpi.so.40";

function symbols() {
  return {
    MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
    MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
    MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
    MPI_Allreduce: {
      parameters: ["pointer", "buffer", "i32", "pointer", "pointer", "pointer"],
      result: "i32",
    },
    // The same call on Deno's blocking-thread pool, so the event loop (GPU readbacks) keeps running.
    MPI_Allreduce_async: {
      name: "MPI_Allreduce",
      parameters: ["pointer", "buffer", "i32", "pointer", "pointer", "pointer"],
      result: "i32",
      nonblocking: true,
    },
    MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
    MPI_Finalize: { parameters: [], result: "i32" },
  } as const;
}

/** One MPI world (MPI_COMM_WORLD) of this process. */
export class Mpi {
  readonly rank: number;
  readonly size: number;
  #lib: Deno.DynamicLibrary<ReturnType<typeof symbols>>;
  #world: Deno.PointerValue;
  #float: Deno.PointerValue;
  #double: Deno.PointerValue;
  #sum: Deno.PointerValue;
  // Calls are serialised (MPI_THREAD_SERIALIZED): async ones run on another thread, one at a time.
  #chain: Promise<unknown> = Promise.resolve();
  #finalized = false;

  private constructor() {
    const enc = (s: string) => new TextEncoder().encode(s + "\0");
    let libc: Deno.DynamicLibrary<{
      dlopen: { parameters: ["buffer", "i32"]; result: "pointer" };
      dlsym: { parameters: ["pointer", "buffer"]; result: "pointer" };
    }>;
    try {
      libc = Deno.dlopen("libc.so.6", {
        dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
        dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
      });
    } catch (e) {
      throw new Error(`MPI: cannot open libc.so.6 for dlsym (${(e as Error).message})`);
    }
    const h = libc.symbols.dlopen(enc(LIB), 0x102 /* RTLD_NOW | RTLD_GLOBAL */);
    if (!h) {
      throw new Error(
        `MPI: ${LIB} not found; install Open MPI (apt-get install -y libopenmpi3 openmpi-bin) for --devices > 1`,
      );
    }
    const sym = (n: string) => {
      const p = libc.symbols.dlsym(h, enc(n));
      if (!p) throw new Error(`MPI: ${LIB} has no symbol ${n} (is it Open MPI 4.x?)`);
      return p;
    };
    this.#world = sym("ompi_mpi_comm_world");
    this.#float = sym("ompi_mpi_float");
    this.#double = sym("ompi_mpi_double");
    this.#sum = sym("ompi_mpi_op_sum");
    this.#lib = Deno.dlopen(LIB, symbols());
    const provided = new Int32Array(1);
    this.#check(
      "MPI_Init_thread",
      this.#lib.symbols.MPI_Init_thread(null, null, MPI_THREAD_SERIALIZED, provided),
    );
    const r = new Int32Array(1), s = new Int32Array(1);
    this.#lib.symbols.MPI_Comm_rank(this.#world, r);
    this.#lib.symbols.MPI_Comm_size(this.#world, s);
    this.rank = r[0];
    this.size = s[0];
  }

  static #instance: Mpi | null = null;

  /** Initialises MPI once per process (a singleton world of one when not started by mpirun). */
  static init(): Mpi {
    return (Mpi.#instance ??= new Mpi());
  }

  #check(what: string, rc: number) {
    if (rc !== 0) throw new Error(`MPI: ${what} failed with error code ${rc} (rank ${this.rank ?? "?"})`);
  }

  /** In-place sum over all ranks, blocking this thread (for small buffers: BN statistics, flags). */
  allreduceSync(buf: Float32Array | Float64Array): void {
    const type = buf instanceof Float64Array ? this.#double : this.#float;
    this.#check(
      "MPI_Allreduce",
      this.#lib.symbols.MPI_Allreduce(
        IN_PLACE,
        buf,
        buf.length,
        type,
        this.#sum,
        this.#world,
      ),
    );
  }

  /** In-place sum over all ranks on a helper thread; calls are queued so only one runs at a time. */
  allreduce(buf: Float32Array | Float64Array): Promise<void> {
    const type = buf instanceof Float64Array ? this.#double : this.#float;
    const run = async () => {
      const rc = await this.#lib.symbols.MPI_Allreduce_async(
        IN_PLACE,
        buf,
        buf.length,
        type,
        this.#sum,
        this.#world,
      );
      this.#check("MPI_Allreduce", rc);
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => {});
    return p;
  }

  /** Waits for the queued async calls. */
  async drain(): Promise<void> {
    await this.#chain;
  }

  /** Ends the whole job (every rank) with `code`. */
  abort(code: number): void {
    this.#lib.symbols.MPI_Abort(this.#world, code);
  }

  /** MPI_Finalize (once). */
  async finalize(): Promise<void> {
    if (this.#finalized) return;
    await this.drain();
    this.#finalized = true;
    this.#lib.symbols.MPI_Finalize();
  }
}

// MPI_IN_PLACE is ((void *) 1) in Open MPI: as the send buffer it makes the receive buffer the input.
const IN_PLACE = Deno.UnsafePointer.create(1n);

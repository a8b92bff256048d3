/**
 * @file Starting N local replicas: `mpirun -n N` with this process's flags, and the per-replica adapter
 * placement (Mesa's device-select layer, chosen per process before WebGPU opens its first adapter).
 */

/** `mpirun` and its arguments for `n` local ranks, forwarding the environment variables `env`. */
export function mpirunArgs(n: number, env: string[] = []): string[] {
  const root = Deno.uid?.() === 0 ? ["--allow-run-as-root"] : [];
  return [
    "mpirun",
    ...root,
    "--oversubscribe",
    "-n",
    String(n),
    // A dead rank ends the job at once (Open MPI's default too; stated so it cannot be configured away).
    "--mca",
    "orte_abort_on_non_zero_status",
    "1",
    ...env.flatMap((k) => ["-x", k]),
  ];
}

/** This rank's index on its host (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK), 0 outside mpirun. */
export function localRank(): number {
  return Number(Deno.env.get("OMPI_COMM_WORLD_LOCAL_RANK") ?? 0);
}

/**
 * Places this process on its GPU before WebGPU starts: `CSN_VK_DEVICES` lists one Vulkan device per local
 * rank as Mesa's device-select layer spells it (`vendorID:deviceID`, see `MESA_VK_DEVICE_SELECT=list
 * vulkaninfo`); the entry for this rank becomes `MESA_VK_DEVICE_SELECT` with the other devices hidden.
 * Returns a description of the choice for the placement listing.
 */
export function placeReplica(rank = localRank()): string {
  const list = Deno.env.get("CSN_VK_DEVICES");
  if (!list) return "default adapter (shared; set CSN_VK_DEVICES to place replicas on separate GPUs)";
  const ids = list.split(",").map((s) => s.trim()).filter(Boolean);
  const id = ids[rank % ids.length];
  if (!/^[0-9a-f]{1,4}:[0-9a-f]{1,4}$/i.test(id)) {
    throw new Error(`CSN_VK_DEVICES: "${id}" is not a Vulkan vendorID:deviceID pair (e.g. 10de:2330)`);
  }
  Deno.env.set("MESA_VK_DEVICE_SELECT", id);
  Deno.env.set("MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE", "1");
  return `MESA_VK_DEVICE_SELECT=${id}`;
}

/**
 * The number of replicas `--devices` asks for: a positive integer, or `all` (one per entry of
 * `CSN_VK_DEVICES` when set, else one per NVIDIA GPU device node `/dev/nvidiaN`, else 1: Deno's WebGPU
 * cannot enumerate adapters).
 */
export function parseDevices(v: string | number | undefined): number {
  if (v === undefined || v === "") return 1;
  if (v === "all") {
    const list = Deno.env.get("CSN_VK_DEVICES");
    if (list) return list.split(",").filter((s) => s.trim()).length;
    try {
      const n = [...Deno.readDirSync("/dev")].filter((e) => /^nvidia\d+$/.test(e.name)).length;
      return Math.max(1, n);
    } catch {
      return 1;
    }
  }
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`--devices must be a positive integer or "all", got "${v}"`);
  }
  return n;
}

/** Set in the environment of the ranks that {@link launchRanks} starts (the re-run marker). */
export const LAUNCHED_ENV = "CSN_PARALLEL_LAUNCHED";

/** What {@link launchRanks} saw: mpirun's exit code and, when a replica died, a sentence naming it. */
export interface LaunchResult {
  code: number;
  /** "replica 1 (adapter ..., pid ... on host ...) was killed by signal 9 (Killed)", or null. */
  failure: string | null;
}

/**
 * Runs `command` as `n` local ranks under `mpirun -n n` (the same program re-run with {@link LAUNCHED_ENV}
 * set), passing its output through. When the job fails, mpirun's report of the dead rank is matched with the
 * placement listing the ranks printed (`devices: replica K -> ...` lines) so the error names the replica
 * and its adapter.
 */
export async function launchRanks(
  n: number,
  command: string[],
  extraMca: string[] = [],
): Promise<LaunchResult> {
  const fwd = ["XDG_RUNTIME_DIR", "NO_COLOR", "CSN_VK_DEVICES", "CSN_PROFILE", LAUNCHED_ENV];
  Deno.env.set(LAUNCHED_ENV, "1");
  const env = fwd.filter((k) => Deno.env.get(k) !== undefined);
  const [cmd, ...args] = [...mpirunArgs(n, env), ...extraMca, ...command];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" }).spawn();
  } catch (e) {
    throw new Error(
      `--devices ${n}: cannot start ${cmd} (${(e as Error).message}); install Open MPI ` +
        `(apt-get install -y openmpi-bin)`,
    );
  } finally {
    Deno.env.delete(LAUNCHED_ENV);
  }
  let text = "";
  const keep = (s: string) => (text = (text + s).slice(-256 * 1024));
  const pump = async (from: ReadableStream<Uint8Array>, to: { writeSync(b: Uint8Array): number }) => {
    const dec = new TextDecoder();
    for await (const chunk of from) {
      keep(dec.decode(chunk, { stream: true }));
      let off = 0;
      while (off < chunk.length) off += to.writeSync(chunk.subarray(off));
    }
  };
  const forward = (sig: Deno.Signal) => () => child.kill(sig);
  const handlers = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  try {
    const [status] = await Promise.all([
      child.status,
      pump(child.stdout, Deno.stdout),
      pump(child.stderr, Deno.stderr),
    ]);
    return { code: status.code, failure: status.success ? null : deadReplica(text) };
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}

/** The dead replica in mpirun's report, with its adapter from the placement listing (exported for tests). */
export function deadReplica(text: string): string | null {
  const placed = new Map<number, string>();
  for (const m of text.matchAll(/^devices: replica (\d+) -> (.*)$/gm)) placed.set(Number(m[1]), m[2]);
  const name = (r: number) =>
    `replica ${r} (${placed.get(r) ?? "adapter unknown: it died before reporting"})`;
  const sig = /process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+) \(([^)]*)\)/.exec(text);
  if (sig) return `${name(Number(sig[1]))} was killed by signal ${sig[3]} (${sig[4]}) on node ${sig[2]}`;
  const code = /Process name:\s*\[\[\d+,\d+\],(\d+)\]\s*Exit code:\s*(\d+)/.exec(text);
  if (code) return `${name(Number(code[1]))} exited with code ${code[2]}`;
  const abort = /MPI_ABORT was invoked on rank (\d+)/.exec(text);
  if (abort) return `${name(Number(abort[1]))} aborted the job`;
  return null;
}

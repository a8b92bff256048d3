/**
 * @file This process's place in a data-parallel run: under `mpirun` (started by `--devices N` or by the
 * user across hosts) it places the replica on its adapter, opens the device, joins the MPI world and prints
 * the placement listing; otherwise it is a world of one on the default adapter.
 */
import { type Device, openDevice } from "../core/device.ts";
import { Mpi, underMpirun } from "./mpi.ts";
import { Replicas } from "./replicas.ts";
import { placeReplica } from "./launch.ts";

/** One process of a (possibly one-process) data-parallel run. */
export interface World {
  device: Device;
  /** Null in a world of one. */
  replicas: Replicas | null;
  rank: number;
  size: number;
  /** Rank 0: logs, validates and writes the run folder. */
  lead: boolean;
  /** One line per replica: "replica K -> adapter (host, pid, placement)". */
  placement: string[];
  /** Waits until every replica got here. */
  barrier(): Promise<void>;
  /** Ends MPI (after the last collective). */
  close(): Promise<void>;
}

/**
 * Gathers one short string per rank to every rank, as bytes in an f32 sum all-reduce (each rank fills its
 * own slot, the others are zero), so it needs nothing beyond the all-reduce and works across hosts.
 */
export async function gatherStrings(mpi: Mpi, s: string, maxBytes = 512): Promise<string[]> {
  const b = new TextEncoder().encode(s).subarray(0, maxBytes);
  const buf = new Float32Array(mpi.size * (maxBytes + 1));
  const base = mpi.rank * (maxBytes + 1);
  buf[base] = b.length;
  b.forEach((v, i) => (buf[base + 1 + i] = v));
  await mpi.allreduce(buf);
  return Array.from({ length: mpi.size }, (_, r) => {
    const o = r * (maxBytes + 1);
    return new TextDecoder().decode(Uint8Array.from(buf.subarray(o + 1, o + 1 + buf[o])));
  });
}

/**
 * Opens this process's device and, under mpirun, the MPI world with its {@link Replicas} (`syncBN`
 * defaults to on with several replicas). `devices`, when given under mpirun, must equal the world size.
 */
export async function openWorld(opts: { devices?: number; syncBN?: boolean } = {}): Promise<World> {
  if (!underMpirun()) {
    if ((opts.devices ?? 1) > 1) throw new Error("openWorld: several devices need mpirun (launchRanks)");
    const device = await openDevice();
    return {
      device,
      replicas: null,
      rank: 0,
      size: 1,
      lead: true,
      placement: [`replica 0 -> ${device.info.description} (default adapter, pid ${Deno.pid})`],
      barrier: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
  }
  // Before WebGPU opens its first adapter: the device-select layer reads the environment then.
  const how = placeReplica();
  const mpi = Mpi.init();
  if (opts.devices !== undefined && opts.devices !== mpi.size) {
    const msg =
      `--devices ${opts.devices} but mpirun started ${mpi.size} ranks; pass the same N (or omit --devices)`;
    if (mpi.rank === 0) console.error(`error: ${msg}`);
    throw new Error(msg);
  }
  const device = await openDevice({ label: `replica ${mpi.rank}` });
  const replicas = new Replicas(mpi, device, { syncBN: opts.syncBN ?? mpi.size > 1 });
  const mine = `${device.info.description} (host ${Deno.hostname()}, pid ${Deno.pid}, ${how})`;
  const all = await gatherStrings(mpi, mine);
  const placement = all.map((s, r) => `replica ${r} -> ${s}`);
  const one = new Float32Array(1);
  return {
    device,
    replicas,
    rank: mpi.rank,
    size: mpi.size,
    lead: mpi.rank === 0,
    placement,
    barrier: () => mpi.allreduce(one),
    close: () => mpi.finalize(),
  };
}

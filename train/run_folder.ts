/**
 * @file The run folder, the contract between training and everything that reads its results:
 *
 *   RUN/config.json             the resolved configuration
 *   RUN/log.jsonl               one JSON object per logged step ({step, epoch, loss, lr, ...}) and one per
 *                               epoch ({epoch, metrics})
 *   RUN/last.safetensors        model state dict after the last saved step (PyTorch names; metadata: epoch,
 *                               step, config)
 *   RUN/best.safetensors        the state dict with the best validation metric so far
 *   RUN/epoch-NNN.safetensors   per-epoch state dicts (`keep` of them, the best by the metric)
 *   RUN/resume.safetensors      what --resume needs: weights, optimizer moments, counters, history
 *   RUN/curves.svg              loss, lr and the validation metric against step
 *
 * Every file is written atomically (temporary file + rename), so `kill -9` at any moment leaves the last
 * complete checkpoint loadable. resume.safetensors is written before last.safetensors: if a run dies
 * between the two, resuming starts from the newer one and last.safetensors is one save older.
 */
import { writeFileAtomic } from "../io/files.ts";
import { encodeSafetensors } from "../io/safetensors.ts";
import type { HostTensor } from "../io/host.ts";
import type { Tensor } from "../core/tensor.ts";

/** One line of log.jsonl. */
export type LogRecord = { step: number; epoch: number; loss: number; lr: number; [k: string]: unknown } | {
  epoch: number;
  step: number;
  metrics: Record<string, number>;
};

/** Keys of the configuration that may change between a run and its resumption. */
const RESUMABLE_CHANGES = new Set(["resume", "max-steps", "devices", "workers", "log-every", "out"]);

/** A run folder; see the file comment for its contents. */
export class RunFolder {
  #log: string[] = [];
  private constructor(readonly dir: string) {}

  /**
   * Opens `dir` for a run with `config`. Without `resume`, a folder that already holds a run is an error (its
   * results are never overwritten silently); with `resume`, the folder must hold a run of the same
   * configuration (flags listed in RESUMABLE_CHANGES may differ).
   */
  static async open(dir: string, config: Record<string, unknown>, resume: boolean): Promise<RunFolder> {
    const run = new RunFolder(dir);
    const old = await readJson(`${dir}/config.json`);
    if (old && !resume) {
      throw new Error(
        `${dir}: already holds a run (config.json); pass --resume to continue it, or choose another --out`,
      );
    }
    if (!old && resume) {
      const hasState = await exists(`${dir}/resume.safetensors`);
      if (!hasState) throw new Error(`${dir}: nothing to resume (no config.json / resume.safetensors)`);
    }
    if (old) {
      const diff = Object.keys({ ...old, ...config }).filter((k) =>
        !RESUMABLE_CHANGES.has(k) && JSON.stringify(old[k]) !== JSON.stringify(config[k])
      );
      if (diff.length) {
        throw new Error(
          `${dir}: was run with another configuration (${
            diff.map((k) => `${k}: ${JSON.stringify(old[k])} -> ${JSON.stringify(config[k])}`).join(", ")
          }); resume with the same flags or choose another --out`,
        );
      }
    }
    await Deno.mkdir(dir, { recursive: true });
    await writeFileAtomic(`${dir}/config.json`, enc(JSON.stringify(config, null, 2) + "\n"), "config");
    const text = await Deno.readTextFile(`${dir}/log.jsonl`).catch(() => "");
    run.#log = text.split("\n").filter((l) => l.trim());
    return run;
  }

  /** Parsed log records so far. */
  records(): LogRecord[] {
    return this.#log.map((l) => JSON.parse(l));
  }

  /**
   * Drops log records past `step` (a run killed after logging a step it had not saved yet), keeping epoch
   * records of epochs before `epoch`; rewrites the log atomically.
   */
  async truncateLog(step: number, epoch: number): Promise<void> {
    this.#log = this.#log.filter((l) => {
      const r = JSON.parse(l);
      return "metrics" in r ? r.epoch < epoch : r.step <= step;
    });
    await writeFileAtomic(`${this.dir}/log.jsonl`, enc(this.#log.map((l) => l + "\n").join("")), "log");
  }

  /** Appends records to log.jsonl (one line each). */
  async log(...records: LogRecord[]): Promise<void> {
    const lines = records.map((r) => JSON.stringify(r));
    this.#log.push(...lines);
    await Deno.writeTextFile(`${this.dir}/log.jsonl`, lines.map((l) => l + "\n").join(""), { append: true });
  }

  /** Writes a state dict as `RUN/<name>.safetensors` with JSON-encoded metadata, atomically. */
  async save(
    name: string,
    sd: Record<string, Tensor | HostTensor>,
    meta: Record<string, unknown>,
  ): Promise<string> {
    const path = `${this.dir}/${name}.safetensors`;
    const m: Record<string, string> = {};
    for (const [k, v] of Object.entries(meta)) if (v !== undefined) m[k] = JSON.stringify(v);
    await writeFileAtomic(path, await encodeSafetensors(sd, m), "checkpoint");
    return path;
  }

  /** Writes any text file of the run atomically. */
  async writeText(name: string, text: string): Promise<string> {
    const path = `${this.dir}/${name}`;
    await writeFileAtomic(path, enc(text), name);
    return path;
  }

  /** Removes a file of the run if present. */
  async remove(name: string): Promise<void> {
    await Deno.remove(`${this.dir}/${name}`).catch(() => {});
  }

  /** Whether the run has a file. */
  has(name: string): Promise<boolean> {
    return exists(`${this.dir}/${name}`);
  }
}

function enc(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function readJson(path: string): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/**
 * @file Choosing a kernel's variant by timing the candidates on the device (`CSN_BENCHMARK=1`), as
 * `torch.backends.cudnn.benchmark` does for cuDNN's algorithms.
 *
 * A kernel with several valid variants (the GEMM's tile, an implicit-GEMM conv's tile) asks
 * {@link Tuner.choose} with a key that names its shape and layout. The first time a key is seen each candidate
 * runs `reps` times on the same inputs into scratch outputs, every dispatch in a pass of its own with GPU
 * timestamps, and the call goes on with its rule's choice (candidate 0); the timestamps are read at the
 * device's next read or sync (a training step's loss), so tuning adds no wait, and from then on the key gets
 * the fastest candidate: its best repetition's GPU time, where it beats candidate 0 by more than `margin`
 * (ties keep the rule's choice, so noise does not flip a choice). The cost is the candidates' runs once per
 * key and the scratch outputs' memory for the while.
 *
 * Off by default, like cuDNN's: the variants sum in different orders, so which one wins decides the last
 * bits of the results, and two runs may choose differently.
 */
import { envFlag } from "./adapter.ts";
import { TimestampLog } from "./timestamps.ts";

/** Options of a {@link Tuner}. */
export interface TunerOptions {
  /** Runs of each candidate; the best counts (default 2: the first run of a kernel may start cold). */
  reps?: number;
  /** Fraction by which a candidate must beat candidate 0 to replace it (default 0.03). */
  margin?: number;
}

/** What the tuner measured and chose for one key. */
export interface TuneDecision {
  key: string;
  /** The candidates' labels, the rule's choice first. */
  candidates: string[];
  /** Each candidate's best GPU milliseconds over its repetitions (null: it recorded no dispatch). */
  ms: (number | null)[];
  /** Index of the chosen candidate. */
  chosen: number;
}

interface Trial {
  key: string;
  cand: number;
  rep: number;
}

interface Pending {
  labels: string[];
  /** ns[cand][rep]: GPU time summed over the trial's dispatches. */
  ns: number[][];
  /** Timed dispatches per candidate (summed over repetitions). */
  count: number[];
  recorded: number;
  collected: number;
}

/** Times kernel variants once per key and remembers the fastest (see the file comment). */
export class Tuner {
  readonly reps: number;
  readonly margin: number;
  #log: TimestampLog<Trial>;
  #trial: Trial | null = null;
  #pending = new Map<string, Pending>();
  /** The chosen candidate's label per decided key. */
  #chosen = new Map<string, string>();
  #decisions: TuneDecision[] = [];

  /** Wraps a device that was granted `timestamp-query`. */
  constructor(gpu: GPUDevice, opts: TunerOptions = {}) {
    this.reps = opts.reps ?? 2;
    this.margin = opts.margin ?? 0.03;
    if (!(Number.isInteger(this.reps) && this.reps >= 1)) {
      throw new Error(`Tuner: reps must be >= 1, got ${this.reps}`);
    }
    this.#log = new TimestampLog(gpu, "Tuner");
  }

  /** Whether a candidate is being recorded now (the device then times each of its dispatches). */
  get measuring(): boolean {
    return this.#trial !== null;
  }

  /** Whether the current submission's query set is full (the device then submits before the next dispatch). */
  get full(): boolean {
    return this.#log.full;
  }

  /** Keys measured but not yet decided. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * The variant to run for `key`: the fastest measured candidate once its timings are in, else `candidates[0]`
   * (the kernel's rule). On a key's first call, `trial` is called for every candidate `reps` times and must
   * record that variant's dispatches into scratch outputs (the inputs are only read). Calls made while a trial
   * records (a kernel inside another's trial) get candidate 0 and measure nothing.
   */
  choose<T>(
    key: string,
    candidates: readonly T[],
    trial: (c: T) => void,
    label: (c: T) => string = String,
  ): T {
    if (candidates.length === 0) throw new Error(`Tuner: no candidates for ${key}`);
    const labels = candidates.map(label);
    const won = labels.indexOf(this.#chosen.get(key) ?? "");
    if (won >= 0) return candidates[won];
    if (this.#trial || candidates.length === 1 || this.#pending.has(key)) return candidates[0];
    const p: Pending = {
      labels,
      ns: candidates.map(() => new Array(this.reps).fill(0)),
      count: candidates.map(() => 0),
      recorded: 0,
      collected: 0,
    };
    this.#pending.set(key, p);
    for (let rep = 0; rep < this.reps; rep++) {
      candidates.forEach((c, cand) => {
        this.#trial = { key, cand, rep };
        try {
          trial(c);
        } finally {
          this.#trial = null;
        }
      });
    }
    if (p.recorded === 0) this.#decide(key, p);
    return candidates[0];
  }

  /** The descriptor of the pass of one dispatch of the trial being recorded (the device calls it). */
  passDescriptor(name: string): GPUComputePassDescriptor {
    const t = this.#trial;
    if (!t) throw new Error("Tuner: no trial is being recorded");
    this.#pending.get(t.key)!.recorded++;
    return { label: `${name} (tuning)`, timestampWrites: this.#log.writes(t) };
  }

  /** Records the resolve and copy of this submission's timestamps at the end of `encoder` (outside any pass). */
  resolve(encoder: GPUCommandEncoder): void {
    this.#log.resolve(encoder);
  }

  /** Reads the submitted timings and decides every key whose trials are all in (the device calls it). */
  async collect(): Promise<void> {
    const touched = new Set<string>();
    for (const { tag, ns } of await this.#log.collect()) {
      const p = this.#pending.get(tag.key);
      if (!p) continue;
      p.ns[tag.cand][tag.rep] += ns;
      p.count[tag.cand]++;
      p.collected++;
      touched.add(tag.key);
    }
    for (const key of touched) {
      const p = this.#pending.get(key)!;
      if (p.collected === p.recorded) this.#decide(key, p);
    }
  }

  #decide(key: string, p: Pending): void {
    const ms = p.ns.map((r, i) => (p.count[i] > 0 ? Math.min(...r) / 1e6 : null));
    const chosen = fastest(ms, this.margin);
    this.#pending.delete(key);
    this.#chosen.set(key, p.labels[chosen]);
    this.#decisions.push({ key, candidates: p.labels, ms, chosen });
  }

  /**
   * Takes earlier decisions (e.g. `decisions()` of another run, through JSON) as made: their keys get the
   * chosen candidate without timing, so that a resumed run computes as the first did. A decision whose
   * chosen label is not among a key's candidates when asked (another device's limits) is timed afresh.
   */
  load(decisions: readonly TuneDecision[]): void {
    for (const d of decisions) {
      const label = d.candidates[d.chosen];
      if (typeof label !== "string") {
        throw new Error(`Tuner.load: decision for ${d.key} has no candidate ${d.chosen}`);
      }
      this.#chosen.set(d.key, label);
      this.#decisions.push({ ...d, candidates: d.candidates.slice(), ms: d.ms.slice() });
    }
  }

  /** Every decision so far, in the order they were made. */
  decisions(): TuneDecision[] {
    return this.#decisions.slice();
  }

  /**
   * A table of the decisions with the most time to gain or lose first: each key's candidates with their
   * milliseconds, the chosen one marked `*`, and the total gained against the rules' choices.
   */
  report(top = 30): string {
    const gain = (d: TuneDecision) => (d.ms[0] ?? 0) - (d.ms[d.chosen] ?? 0);
    const spread = (d: TuneDecision) => {
      const v = d.ms.filter((m): m is number => m !== null);
      return v.length ? Math.max(...v) - Math.min(...v) : 0;
    };
    const ds = this.decisions().sort((a, b) => spread(b) - spread(a));
    const lines = ds.slice(0, top).map((d) =>
      `${d.key}\n    ${
        d.candidates.map((c, i) => `${i === d.chosen ? "*" : " "}${c} ${d.ms[i]?.toFixed(3) ?? "-"} ms`).join(
          "   ",
        )
      }`
    );
    if (ds.length > top) lines.push(`(${ds.length - top} more keys)`);
    const total = ds.reduce((s, d) => s + gain(d), 0);
    const changed = ds.filter((d) => d.chosen !== 0).length;
    lines.push(
      `${ds.length} keys tuned, ${changed} changed from the rule's choice; ${
        total.toFixed(3)
      } ms gained per ` +
        `call of each key (candidate 0 = the rule's choice; * = chosen)`,
    );
    return lines.join("\n");
  }

  /** Frees the query sets and buffers. */
  destroy(): void {
    this.#log.destroy();
  }
}

/**
 * The index of the fastest of `ms` (null: not measured), where it beats `ms[0]` by more than `margin` (a
 * fraction of `ms[0]`); else 0.
 */
export function fastest(ms: readonly (number | null)[], margin: number): number {
  let best = 0;
  ms.forEach((m, i) => {
    if (m !== null && (ms[best] === null || m < ms[best]!)) best = i;
  });
  return best !== 0 && ms[0] !== null && ms[best]! > ms[0] * (1 - margin) ? 0 : best;
}

/** Whether env `CSN_BENCHMARK` asks for tuning ("1"/"true"); false where env access is not allowed. */
export function benchmarkRequested(): boolean {
  return envFlag("CSN_BENCHMARK");
}

/**
 * `deno task synth [--out DIR] [--studies N] [--seed S] [--size N] [--mask-fraction F]`: writes a synthetic
 * dataset in the RSNA layout (see data/synth.ts) with a progress line per study. `--help` lists the flags.
 */
import { type Flags, type FlagSpec, parseFlags, usage, UsageError } from "../cli/flags.ts";
import { duration, Progress } from "../cli/progress.ts";
import { type SynthOptions, writeSyntheticDataset } from "../data/synth.ts";

/** One flag of the command: its spec, the SynthOptions key it sets and what a valid value is. */
interface SynthFlag extends FlagSpec {
  key: Exclude<keyof SynthOptions, "onStudy">;
  /** The requirement a value breaks ("an integer >= 1"), or undefined when it is valid. */
  check?: (v: unknown) => string | undefined;
}

const integer = (min: number) => (v: unknown) =>
  Number.isInteger(v) && (v as number) >= min ? undefined : `an integer >= ${min}`;
const fraction = (v: unknown) => typeof v === "number" && v >= 0 && v <= 1 ? undefined : "a number in 0..1";

/** The flags, one row per option of data/synth.ts's SynthOptions. */
export const SYNTH_FLAGS: Record<string, SynthFlag> = {
  out: { key: "out", type: "string", default: "out/synth", help: "dataset folder (train_images/, ...)" },
  studies: { key: "studies", type: "number", default: 20, help: "phantom studies", check: integer(1) },
  seed: { key: "seed", type: "number", default: 0, help: "seed of the whole dataset", check: integer(0) },
  size: { key: "size", type: "number", default: 128, help: "in-plane size of a slice", check: integer(16) },
  "mask-fraction": {
    key: "maskFraction",
    type: "number",
    default: 0.5,
    help: "fraction of studies with a segmentation mask",
    check: fraction,
  },
};

/** The SynthOptions of parsed flags; a value out of range throws UsageError naming the flag. */
export function synthOptions(f: Flags): SynthOptions {
  const o: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(SYNTH_FLAGS)) {
    const bad = s.check?.(f[name]);
    if (bad) throw new UsageError(`--${name} must be ${bad}, got ${f[name]}`);
    o[s.key] = f[name];
  }
  return o as unknown as SynthOptions;
}

/** Runs the command line; returns the exit code (2 for usage errors, as train/cli.ts). */
export async function main(args: string[]): Promise<number> {
  let o: SynthOptions;
  try {
    const f = parseFlags(args, SYNTH_FLAGS);
    if (f.help) {
      console.log(
        usage(
          "deno task synth: phantom CT studies in the RSNA layout (train_images/, segmentations/, train.csv)",
          SYNTH_FLAGS,
        ),
      );
      return 0;
    }
    o = synthOptions(f);
  } catch (e) {
    console.error(`synth: ${(e as Error).message}`);
    return 2;
  }
  const t0 = performance.now();
  const progress = new Progress(1);
  try {
    await writeSyntheticDataset({
      ...o,
      onStudy: (i, uid) => {
        const sec = (performance.now() - t0) / 1000;
        const eta = (sec / (i + 1)) * (o.studies - i - 1);
        progress.update(`study ${i + 1}/${o.studies} ${uid}  ${duration(sec)}, ETA ${duration(eta)}`);
      },
    });
  } catch (e) {
    progress.done();
    console.error(`synth: error: ${(e as Error).message}`);
    return 1;
  }
  progress.done();
  console.log(
    `wrote ${o.studies} studies to ${o.out}/train_images, masks to ${o.out}/segmentations, ` +
      `labels to ${o.out}/train.csv`,
  );
  return 0;
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);

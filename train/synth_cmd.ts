/**
 * `deno task synth [--out DIR] [--studies N] [--seed S] [--size N] [--mask-fraction F]`: writes a synthetic
 * dataset in the RSNA layout (see data/synth.ts) with a progress line per study. `--help` lists the flags.
 */
import { type Flags, type FlagSpec, parseFlags, usage, UsageError } from "../cli/flags.ts";
import { duration, Progress } from "../cli/progress.ts";
import { type SynthOptions, writeSyntheticDataset } from "../data/synth.ts";
import { writeFileAtomic } from "../io/files.ts";
import { phantomPreview } from "./phantom_preview.ts";

/** One flag of the command: its spec, the SynthOptions key it sets and what a valid value is. */
interface SynthFlag extends FlagSpec {
  key: Exclude<keyof SynthOptions, "onStudy">;
  /** The requirement a value breaks ("an integer >= 1"), or undefined when it is valid. */
  check?: (v: unknown) => string | undefined;
  /** The option's value from the flag's (after `check`). */
  parse?: (v: unknown) => unknown;
}

const integer = (min: number) => (v: unknown) =>
  Number.isInteger(v) && (v as number) >= min ? undefined : `an integer >= ${min}`;
const mmList = (v: unknown) =>
  String(v).split(",").every((x) => Number(x) > 0 && Number(x) <= 10)
    ? undefined
    : "comma-separated mm in (0, 10]";
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
  "positive-fraction": {
    key: "positiveFraction",
    type: "number",
    default: 0.5,
    help: "fraction of studies with at least one fracture",
    check: fraction,
  },
  "box-fraction": {
    key: "boxFraction",
    type: "number",
    default: 1,
    help: "fraction of the fractured studies with boxes in train_bounding_boxes.csv",
    check: fraction,
  },
  thickness: {
    key: "thickness",
    type: "string",
    default: "1.25,1.5,2,2.5",
    help: "slice spacings (mm) a study draws from",
    check: mmList,
    parse: (v) => String(v).split(",").map(Number),
  },
};

/** Flags of the command that are not dataset options. */
const EXTRA_FLAGS: Record<string, FlagSpec> = {
  preview: { type: "number", default: 0, help: "pictures of the first N studies' anatomy in <out>/preview/" },
};

/** The SynthOptions of parsed flags; a value out of range throws UsageError naming the flag. */
export function synthOptions(f: Flags): SynthOptions {
  const o: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(SYNTH_FLAGS)) {
    const bad = s.check?.(f[name]);
    if (bad) throw new UsageError(`--${name} must be ${bad}, got ${f[name]}`);
    o[s.key] = s.parse ? s.parse(f[name]) : f[name];
  }
  return o as unknown as SynthOptions;
}

/** Runs the command line; returns the exit code (2 for usage errors, as train/cli.ts). */
export async function main(args: string[]): Promise<number> {
  let o: SynthOptions, preview = 0;
  try {
    const f = parseFlags(args, { ...SYNTH_FLAGS, ...EXTRA_FLAGS });
    if (f.help) {
      console.log(
        usage(
          "deno task synth: phantom CT studies in the RSNA layout (train_images/, segmentations/, train.csv)",
          { ...SYNTH_FLAGS, ...EXTRA_FLAGS },
        ),
      );
      return 0;
    }
    o = synthOptions(f);
    preview = f.preview as number;
    if (!Number.isInteger(preview) || preview < 0) throw new UsageError(`--preview must be an integer >= 0`);
  } catch (e) {
    console.error(`synth: ${(e as Error).message}`);
    return 2;
  }
  const t0 = performance.now();
  const progress = new Progress(1);
  try {
    await writeSyntheticDataset({
      ...o,
      onStudy: async (i, uid, st) => {
        if (i < preview) {
          await Deno.mkdir(`${o.out}/preview`, { recursive: true });
          await writeFileAtomic(`${o.out}/preview/${uid}.png`, await phantomPreview(st), "preview");
        }
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
      `labels to ${o.out}/train.csv, fracture boxes to ${o.out}/train_bounding_boxes.csv${
        preview ? `, pictures of the anatomy to ${o.out}/preview/` : ""
      }`,
  );
  return 0;
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);

/**
 * @file `deno task score --pred SUB.csv --truth train.csv [--train-labels train.csv]`: scores a submission
 * against train.csv with the competition metric (infer/metric.ts) and prints one JSON object: {score, studies,
 * perTarget: {target: weighted log loss}, constant: {score, probabilities, source}, ratio, difference}, the
 * constant being the best constant prediction of the training labels (without them, of the scored studies' own
 * labels: an oracle) and `difference` the score minus the constant's with its 95 % paired bootstrap interval
 * over the studies. Exit status 2 for a bad command line, 1 for bad files.
 */
import { readScored } from "./score.ts";
import { constantBaseline, versusConstant } from "./evaluate.ts";
import { competitionScore } from "./metric.ts";

const USAGE = `usage: deno task score --pred SUBMISSION.csv --truth train.csv

  --pred   submission file: header row_id,fractured; 8 rows per study (<uid>_C1.._C7, <uid>_patient_overall)
  --truth  train.csv (StudyInstanceUID, patient_overall, C1..C7); only the submission's studies are scored
  --train-labels  train.csv of the model's training: its best constant prediction is the yardstick printed
           beside the score (default: the scored studies' own labels, an oracle baseline)`;

/** Parses `--pred P --truth T [--train-labels L]` (also `--name=value`). */
export function parseScoreArgs(
  args: string[],
): { pred: string; truth: string; trainLabels?: string } | "help" {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--help" || a === "-h") return "help";
    const m = /^--(pred|truth|train-labels)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unexpected argument "${a}"`);
    const v = m[2] ?? args[++i];
    if (v === undefined || v === "") throw new Error(`--${m[1]} needs a file path`);
    out[m[1]] = v;
  }
  for (const k of ["pred", "truth"]) if (!out[k]) throw new Error(`--${k} is required`);
  return { pred: out.pred, truth: out.truth, trainLabels: out["train-labels"] };
}

if (import.meta.main) {
  let args: ReturnType<typeof parseScoreArgs>;
  try {
    args = parseScoreArgs(Deno.args);
  } catch (e) {
    console.error(`score: ${(e as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  if (args === "help") {
    console.log(USAGE);
    Deno.exit(0);
  }
  try {
    const { pred, truth } = await readScored(args.pred, args.truth);
    const r = competitionScore(pred, truth);
    const constant = await constantBaseline(truth, args.trainLabels);
    const difference = versusConstant(pred, truth, constant.probabilities);
    console.log(JSON.stringify({ ...r, constant, ratio: r.score / constant.score, difference }, null, 2));
  } catch (e) {
    console.error(`score: ${(e as Error).message}`);
    Deno.exit(1);
  }
}

/**
 * What the tuner (`CSN_BENCHMARK=1`, core/tuner.ts) found in a `bench/gpu.sh` run, per kind of kernel, to turn
 * its measurements into rules:
 *
 *   deno run -A bench/tuning_summary.ts OUTDIR/gpu-results.jsonl
 *
 * For each `tuning` record (a model's step, the kernel list, an inference run) and each kind (GEMM, a conv's
 * forward, input gradient, weight gradient): how many shapes were tuned, how many kept the rule's variant, the
 * GPU time of the rules' variants against the chosen ones summed over the shapes (one call each), and which
 * variants won how often.
 */
import type { TuneDecision } from "../mod.ts";

/** One kind's totals. */
export interface KindSummary {
  kind: string;
  keys: number;
  /** Keys whose rule's variant (candidate 0) was kept. */
  kept: number;
  /** Summed over the keys: the rule's variant's ms and the chosen one's. */
  ruleMs: number;
  chosenMs: number;
  /** Chosen label -> keys. */
  winners: Record<string, number>;
}

/** The kind of a decision's key: "gemm", "conv forward", "conv input gradient", "conv weight gradient". */
function kindOf(key: string): string {
  const m = key.match(/^conv (forward|input gradient|weight gradient) /);
  return m ? `conv ${m[1]}` : key.split(" ")[0];
}

/** Totals per kind of a list of decisions, in the order the kinds first appear. */
export function summarize(decisions: readonly TuneDecision[]): KindSummary[] {
  const by = new Map<string, KindSummary>();
  for (const d of decisions) {
    const kind = kindOf(d.key);
    let s = by.get(kind);
    if (!s) by.set(kind, s = { kind, keys: 0, kept: 0, ruleMs: 0, chosenMs: 0, winners: {} });
    s.keys++;
    if (d.chosen === 0) s.kept++;
    s.ruleMs += d.ms[0] ?? 0;
    s.chosenMs += d.ms[d.chosen] ?? 0;
    const w = d.candidates[d.chosen];
    s.winners[w] = (s.winners[w] ?? 0) + 1;
  }
  return [...by.values()];
}

/** The summary as text lines. */
export function formatSummary(of: string, kinds: readonly KindSummary[]): string {
  const lines = [`${of}:`];
  for (const k of kinds) {
    const won = Object.entries(k.winners).sort((a, b) => b[1] - a[1]).map(([l, n]) => `${l} ${n}`).join(", ");
    const gain = k.ruleMs > 0 ? `${((1 - k.chosenMs / k.ruleMs) * 100).toFixed(0)} % less` : "-";
    lines.push(
      `  ${k.kind}: ${k.keys} shapes, ${k.kept} kept the rule's variant; rules ${k.ruleMs.toFixed(2)} ms, ` +
        `chosen ${k.chosenMs.toFixed(2)} ms (${gain}); winners: ${won}`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const file = Deno.args[0];
  if (!file) {
    console.error("usage: deno run -A bench/tuning_summary.ts OUTDIR/gpu-results.jsonl");
    Deno.exit(2);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    console.error(`${file}: cannot read (${(e as Error).message})`);
    Deno.exit(1);
  }
  let found = 0;
  for (const [i, line] of text.split("\n").entries()) {
    if (!line.includes('"tuning"')) continue;
    let r: { what?: string; of?: string; adapter?: string; decisions?: TuneDecision[] };
    try {
      r = JSON.parse(line);
    } catch {
      console.error(`${file}:${i + 1}: not a JSON line; skipped`);
      continue;
    }
    if (r.what !== "tuning" || !Array.isArray(r.decisions)) continue;
    found++;
    console.log(formatSummary(`${r.of ?? "?"} (${r.adapter ?? "?"})`, summarize(r.decisions)));
  }
  if (!found) console.log(`${file}: no tuning records (run bench/gpu.sh, whose *-tuned parts write them)`);
}

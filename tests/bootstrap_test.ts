import { differenceText, pairedBootstrap } from "../infer/bootstrap.ts";
import { versusConstant } from "../infer/evaluate.ts";
import { competitionScore } from "../infer/metric.ts";
import { constantScore } from "../infer/score.ts";
import { mulberry32 } from "../core/random.ts";
import { assertClose } from "./helpers.ts";

function assert(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

/** Standard normal draws (Box-Muller) from a seeded generator. */
function normals(n: number, seed: number): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng()));
}

Deno.test("pairedBootstrap: the interval of a mean difference against the normal theory", () => {
  // 400 studies whose differences are N(0.05, 0.2^2): the interval is close to mean +- 1.96 s / sqrt(n).
  const n = 400, noise = normals(n, 1);
  const b = normals(n, 2).map((v) => 0.6 + 0.3 * v); // the baseline's own spread must cancel (paired)
  const a = b.map((v, i) => v + 0.05 + 0.2 * noise[i]);
  const d = a.map((v, i) => v - b[i]);
  const mean = d.reduce((x, y) => x + y) / n;
  const sd = Math.sqrt(d.reduce((x, y) => x + (y - mean) ** 2, 0) / (n - 1));
  const r = pairedBootstrap(a, b, { resamples: 4000 });
  assertClose([r.difference], [mean], "difference", 1e-12, 0);
  const half = 1.96 * sd / Math.sqrt(n);
  assertClose([r.low, r.high], [mean - half, mean + half], "95 % interval", 0, 0.1 * half);
  assert(r.studies === n && r.resamples === 4000 && r.level === 0.95, "fields");
  // A narrower level gives a narrower interval; the same seed the same interval.
  const r50 = pairedBootstrap(a, b, { resamples: 4000, level: 0.5 });
  assertClose([r50.high - r50.low], [2 * 0.6745 * sd / Math.sqrt(n)], "50 % width", 0, 0.1 * half);
  const again = pairedBootstrap(a, b, { resamples: 4000 });
  assert(again.low === r.low && again.high === r.high, "seeded");
});

Deno.test("pairedBootstrap: a constant difference has no spread, however the studies differ", () => {
  const b = normals(30, 3).map((v) => 1 + v);
  const r = pairedBootstrap(b.map((v) => v - 0.125), b);
  assertClose([r.difference, r.low, r.high], [-0.125, -0.125, -0.125], "constant difference", 1e-12, 0);
  let err = "";
  try {
    pairedBootstrap([1, 2], [1]);
  } catch (e) {
    err = (e as Error).message;
  }
  assert(err.includes("equal, non-empty"), `error "${err}"`);
});

Deno.test("versusConstant: the difference is the score minus the constant's, with its verdict", () => {
  const rng = mulberry32(5);
  const truth = new Map<string, number[]>(), pred = new Map<string, number[]>();
  for (let s = 0; s < 40; s++) {
    const y = Array.from({ length: 7 }, () => (rng() < 0.15 ? 1 : 0));
    truth.set(`s${s}`, [Math.max(...y), ...y]);
    // A model that knows the answer in part: its probabilities lean toward the truth.
    pred.set(`s${s}`, truth.get(`s${s}`)!.map((v) => 0.02 + 0.96 * (0.5 * v + 0.5 * rng())));
  }
  const probs = [0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
  const r = versusConstant(pred, truth, probs);
  const want = competitionScore(pred, truth).score - constantScore(probs, truth);
  assertClose([r.difference], [want], "difference", 1e-12, 0);
  assert(
    r.low <= r.difference && r.difference <= r.high && r.studies === 40,
    `interval ${JSON.stringify(r)}`,
  );
  const text = differenceText(r);
  const verdict = r.high < 0
    ? "better than the constant"
    : r.low > 0
    ? "worse than the constant"
    : "within the noise";
  assert(text.endsWith(`over 40 studies: ${verdict}`), text);
  const same = differenceText(
    versusConstant(new Map([...truth.keys()].map((u) => [u, probs])), truth, probs),
  );
  assert(
    same === "difference +0.000, 95 % interval +0.000 to +0.000 over 40 studies: the constant's own score",
    same,
  );
  // A calibration that fell back to the constant differs from it by round-off only.
  const roundOff = differenceText({
    difference: 1e-17,
    low: -2e-17,
    high: 3e-17,
    level: 0.95,
    resamples: 10,
    studies: 8,
  });
  assert(
    roundOff.startsWith("difference +0.000, 95 % interval +0.000 to +0.000") &&
      roundOff.endsWith("own score"),
    roundOff,
  );
  const worse = differenceText({
    difference: 0.2,
    low: 0.1,
    high: 0.3,
    level: 0.95,
    resamples: 10,
    studies: 8,
  });
  assert(
    worse === "difference +0.200, 95 % interval +0.100 to +0.300 over 8 studies: worse than the constant",
    worse,
  );
});

/**
 * The competition metric (infer/metric.ts) against an independent numpy implementation
 * (tests/metric_fixtures.py): aggregateStudy on random logits (large magnitudes, k = 1 and many crops) and
 * competitionScore on random studies plus edge cases (p = 0 and 1 clipped to 1e-15, a study without
 * positives, an all-positive study); a hand-computed value; errors.
 */
import { aggregateStudy, competitionScore, LOG_EPS, targetWeight } from "../infer/metric.ts";
import { TARGETS } from "../data/rsna.ts";
import { assertClose, assertThrows, prng, pyFixture } from "./helpers.ts";

type Study = { pred: number[][]; truth: number[][] };

function randomStudies(seed: number, n: number, posRate: number): Study {
  const r = prng(seed);
  const pred: number[][] = [], truth: number[][] = [];
  for (let i = 0; i < n; i++) {
    const y = [0, ...Array.from({ length: 7 }, () => (r() < posRate ? 1 : 0))];
    y[0] = y.slice(1).some((v) => v) ? 1 : 0;
    truth.push(y);
    pred.push(Array.from({ length: 8 }, () => r()));
  }
  return { pred, truth };
}

function toMaps(s: Study) {
  const pred = new Map<string, number[]>(), truth = new Map<string, number[]>();
  s.pred.forEach((p, i) => pred.set(`1.2.${i}`, p));
  s.truth.forEach((y, i) => truth.set(`1.2.${i}`, y));
  return { pred, truth };
}

Deno.test("metric: aggregateStudy and competitionScore match numpy", async () => {
  const r = prng(7);
  const agg = [1, 2, 8, 9].map((k) => ({
    logits: Array.from(
      { length: k },
      () => Array.from({ length: 8 }, () => (r() - 0.5) * (r() < 0.2 ? 100 : 8)),
    ),
  }));
  const scores: Study[] = [
    randomStudies(1, 1, 0.3),
    randomStudies(2, 17, 0.2),
    randomStudies(3, 60, 0.5),
    // p exactly 0 and 1, right and wrong: clipped to [1e-15, 1 - 1e-15], finite.
    {
      pred: [[0, 1, 0, 1, 0.5, 0, 1, 0.3], [1, 1, 1, 1, 1, 1, 1, 1]],
      truth: [[1, 1, 1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0]],
    },
    // No positives at all / every target positive.
    { pred: [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]], truth: [[0, 0, 0, 0, 0, 0, 0, 0]] },
    { pred: [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]], truth: [[1, 1, 1, 1, 1, 1, 1, 1]] },
  ];
  const ref = await pyFixture("metric_fixtures.py", { aggregate: agg, score: scores });
  agg.forEach((c, i) => {
    const got = aggregateStudy(Float32Array.from(c.logits.flat()), c.logits.length);
    // f32 logits in, f64 numpy on the same f32 values: compare tightly.
    const ref32 = ref.aggregate[i];
    assertClose(got, ref32, `aggregate k=${c.logits.length}`, 1e-6, 1e-7);
    for (const v of got) if (v < 0.01 || v > 0.99) throw new Error(`aggregate not clipped: ${v}`);
  });
  scores.forEach((s, i) => {
    const { pred, truth } = toMaps(s);
    const got = competitionScore(pred, truth);
    if (got.studies !== s.pred.length) throw new Error(`studies ${got.studies}`);
    assertClose([got.score], [ref.score[i].score], `score case ${i}`, 1e-12, 1e-12);
    assertClose(
      TARGETS.map((t) => got.perTarget[t]),
      ref.score[i].perTarget,
      `perTarget case ${i}`,
      1e-12,
      1e-12,
    );
    if (!Number.isFinite(got.score)) throw new Error(`case ${i}: score not finite`);
  });
});

Deno.test("metric: hand-computed values", () => {
  // All p = 0.5: every BCE is ln 2 whatever the weights, so the score is ln 2.
  const half = competitionScore(
    new Map([["a", new Array(8).fill(0.5)], ["b", new Array(8).fill(0.5)]]),
    new Map([["a", [1, 0, 1, 0, 0, 0, 0, 0]], ["b", new Array(8).fill(0)]]),
  );
  assertClose([half.score], [Math.LN2], "all 0.5", 1e-15, 0);
  // One study, overall positive (w 14) predicted 0.9, C1 positive (w 2) predicted 0.5, C2..C7 negative (w 1
  // each) predicted 0: L = (14 (-ln 0.9) + 2 ln 2 + 6 (-ln(1 - 1e-15))) / (14 + 2 + 6).
  const one = competitionScore(
    new Map([["s", [0.9, 0.5, 0, 0, 0, 0, 0, 0]]]),
    new Map([["s", [1, 1, 0, 0, 0, 0, 0, 0]]]),
  );
  const expect = (14 * -Math.log(0.9) + 2 * Math.LN2 + 6 * -Math.log(1 - LOG_EPS)) / 22;
  assertClose([one.score], [expect], "hand case", 1e-14, 0);
  // p = 0 for a positive target costs -ln(1e-15) = 34.54 (clipped), not infinity.
  const zero = competitionScore(
    new Map([["s", [0, 0, 0, 0, 0, 0, 0, 0]]]),
    new Map([["s", [1, 0, 0, 0, 0, 0, 0, 0]]]),
  );
  assertClose([zero.perTarget.patient_overall], [-Math.log(1e-15)], "p=0 clipped", 1e-12, 0);
  if (
    targetWeight(0, 1) !== 14 || targetWeight(0, 0) !== 7 || targetWeight(3, 1) !== 2 ||
    targetWeight(3, 0) !== 1
  ) {
    throw new Error("weights");
  }
  // aggregateStudy: max over crops per output; logit 0 -> 0.5; large values clipped.
  const a = aggregateStudy(Float32Array.from([0, -100, 100, 1, 0, 0, 0, 0, -1, 2, -100, 0, 0, 0, 0, 0]), 2);
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  assertClose(a, [0.5, sig(2), 0.99, sig(1), 0.5, 0.5, 0.5, 0.5], "aggregate by hand", 1e-7, 0);
  if (aggregateStudy([-100, -100, -100, -100, -100, -100, -100, -100], 1).some((v) => v !== 0.01)) {
    throw new Error("lower clip");
  }
});

Deno.test("metric: errors", () => {
  const ok = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], y = [0, 0, 0, 0, 0, 0, 0, 0];
  assertThrows(() => competitionScore(new Map([["x", ok]]), new Map([["y", y]])), "study x", "no truth");
  assertThrows(
    () => competitionScore(new Map([["x", [...ok.slice(1), NaN]]]), new Map([["x", y]])),
    "C7",
    "NaN",
  );
  assertThrows(
    () => competitionScore(new Map([["x", [1.5, ...ok.slice(1)]]]), new Map([["x", y]])),
    "patient_overall",
  );
  assertThrows(() => competitionScore(new Map([["x", ok.slice(1)]]), new Map([["x", y]])), "8 values");
  assertThrows(
    () => competitionScore(new Map([["x", ok]]), new Map([["x", [2, 0, 0, 0, 0, 0, 0, 0]]])),
    "0 or 1",
  );
  assertThrows(() => competitionScore(new Map(), new Map()), "no predicted");
  assertThrows(() => aggregateStudy(new Float32Array(15), 2), "k * 8 = 16");
  assertThrows(() => aggregateStudy(new Float32Array(8).fill(NaN), 1), "NaN");
});

/**
 * Submission files (infer/score.ts): a round trip (writeSubmission -> readSubmission -> scoreSubmission,
 * equal to competitionScore on the maps), the row order of written files, every error (bad header,
 * malformed id, empty uid, values that are not numbers in [0, 1], duplicates, missing rows of a study,
 * studies unknown to the truth), `deno task score` run as a subprocess, and a constant prediction's score.
 */
import {
  constantScore,
  parseSubmission,
  readSubmission,
  scoreSubmission,
  writeSubmission,
} from "../infer/score.ts";
import { competitionScore } from "../infer/metric.ts";
import { rowIds, TARGETS } from "../data/rsna.ts";
import { assertClose, assertRejectsWith, assertThrows, prng } from "./helpers.ts";

const TRUTH = [
  "StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7",
  "1.2.826.0.1.1,1,0,1,0,0,0,0,1",
  "1.2.826.0.1.2,0,0,0,0,0,0,0,0",
  "1.2.826.0.1.3,1,1,1,1,1,1,1,1",
].join("\n") + "\n";

async function tmpdir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "score_test_" });
}

function submission(rows: [string, string][]): string {
  return ["row_id,fractured", ...rows.map(([a, b]) => `${a},${b}`)].join("\n") + "\n";
}

function fullRows(uid: string, p = "0.5"): [string, string][] {
  return rowIds(uid).map((id) => [id, p]);
}

Deno.test("score: round trip and competition row order", async () => {
  const dir = await tmpdir();
  try {
    const r = prng(3);
    const preds = new Map<string, number[]>();
    for (const uid of ["1.2.826.0.1.3", "1.2.826.0.1.1"]) {
      preds.set(
        uid,
        Array.from({ length: 8 }, () => r()),
      );
    }
    preds.get("1.2.826.0.1.1")![2] = 0; // exact 0 and 1 are valid probabilities
    preds.get("1.2.826.0.1.1")![3] = 1;
    const sub = `${dir}/sub.csv`, truth = `${dir}/train.csv`;
    await writeSubmission(sub, preds);
    await Deno.writeTextFile(truth, TRUTH);
    const lines = (await Deno.readTextFile(sub)).trim().split("\n");
    const expectIds = ["row_id", ...["1.2.826.0.1.3", "1.2.826.0.1.1"].flatMap((u) => rowIds(u))];
    if (lines.map((l) => l.split(",")[0]).join() !== expectIds.join()) {
      throw new Error(`row order:\n${lines.join("\n")}`);
    }
    if (!lines[1].startsWith("1.2.826.0.1.3_C1,") || !lines[8].startsWith("1.2.826.0.1.3_patient_overall,")) {
      throw new Error("competition order is C1..C7 then patient_overall");
    }
    const back = await readSubmission(sub);
    for (const [uid, p] of preds) assertClose(back.get(uid)!, p, `round trip ${uid}`, 0, 0);
    const s = await scoreSubmission(sub, truth);
    const truthMap = new Map([
      ["1.2.826.0.1.1", [1, 0, 1, 0, 0, 0, 0, 1]],
      ["1.2.826.0.1.3", [1, 1, 1, 1, 1, 1, 1, 1]],
    ]);
    const want = competitionScore(preds, truthMap);
    // Only the submission's 2 studies are scored (1.2.826.0.1.2 of the truth is not).
    if (s.studies !== 2) throw new Error(`studies ${s.studies}`);
    assertClose([s.score], [want.score], "score", 0, 0);
    assertClose(TARGETS.map((t) => s.perTarget[t]), TARGETS.map((t) => want.perTarget[t]), "perTarget", 0, 0);
    const tmpLeft = [...Deno.readDirSync(dir)].filter((e) => e.name.includes(".tmp"));
    if (tmpLeft.length) throw new Error(`temporary files left: ${tmpLeft.map((e) => e.name)}`);
    await assertRejectsWith(
      writeSubmission(`${dir}/bad.csv`, new Map([["u", [0.5, 2, 0, 0, 0, 0, 0, 0]]])),
      "u_C1",
      "[0, 1]",
    );
    await assertRejectsWith(writeSubmission(`${dir}/bad.csv`, new Map([["u", [0.5]]])), "8 probabilities");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("score: submission errors name the file, line and row", () => {
  const F = "sub.csv";
  assertThrows(() => parseSubmission("", F), "sub.csv", "empty");
  assertThrows(() => parseSubmission("id,fractured\n", F), "sub.csv: line 1", "header");
  assertThrows(() => parseSubmission("row_id,fractured,extra\n", F), "line 1", "header");
  assertThrows(() => parseSubmission(submission([["abc_C9", "0.5"]]), F), "line 2", "abc_C9");
  assertThrows(() => parseSubmission(submission([["_C1", "0.5"]]), F), "line 2", "empty study uid");
  assertThrows(
    () => parseSubmission(submission([...fullRows("u").slice(0, 3), ["u_C4", "1.2"]]), F),
    "line 5",
    "u_C4",
    "1.2",
  );
  assertThrows(() => parseSubmission(submission([["u_C1", "abc"]]), F), "line 2", "u_C1", '"abc"');
  assertThrows(() => parseSubmission(submission([["u_C1", ""]]), F), "line 2", "u_C1");
  assertThrows(() => parseSubmission(submission([["u_C1", "NaN"]]), F), "line 2");
  assertThrows(() => parseSubmission(submission([["u_C1", "0x1"]]), F), "line 2");
  assertThrows(() => parseSubmission(submission([["u_C1", "-0.1"]]), F), "line 2");
  assertThrows(
    () => parseSubmission(submission([...fullRows("u"), ["u_C3", "0.1"]]), F),
    "line 10",
    "duplicate row u_C3",
    "line 4",
  );
  assertThrows(
    () =>
      parseSubmission(
        submission([...fullRows("u"), ...fullRows("v").filter(([id]) => !id.endsWith("C5"))]),
        F,
      ),
    "study v",
    "v_C5",
  );
  assertThrows(() => parseSubmission('row_id,fractured\n"u_C1,0.5\n', F), "sub.csv", "malformed CSV");
  // Blank lines, CRLF and a BOM are fine.
  const ok = parseSubmission(
    "\ufeff" + submission(fullRows("u", "0.25")).replaceAll("\n", "\r\n") + "\r\n",
    F,
  );
  if (ok.get("u")?.join() !== new Array(8).fill(0.25).join()) throw new Error("CRLF/BOM parse");
});

Deno.test("score: unknown studies and unreadable files", async () => {
  const dir = await tmpdir();
  try {
    await Deno.writeTextFile(`${dir}/train.csv`, TRUTH);
    await Deno.writeTextFile(
      `${dir}/sub.csv`,
      submission([...fullRows("1.2.826.0.1.2"), ...fullRows("9.9")]),
    );
    await assertRejectsWith(
      scoreSubmission(`${dir}/sub.csv`, `${dir}/train.csv`),
      "sub.csv",
      "not in",
      "9.9",
    );
    await assertRejectsWith(
      scoreSubmission(`${dir}/none.csv`, `${dir}/train.csv`),
      "none.csv",
      "cannot read",
    );
    await Deno.writeTextFile(`${dir}/empty.csv`, "row_id,fractured\n");
    await assertRejectsWith(scoreSubmission(`${dir}/empty.csv`, `${dir}/train.csv`), "empty.csv", "no rows");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("score: deno task score prints the JSON result; errors exit 1", async () => {
  const dir = await tmpdir();
  try {
    await Deno.writeTextFile(`${dir}/train.csv`, TRUTH);
    await Deno.writeTextFile(`${dir}/sub.csv`, submission([...fullRows("1.2.826.0.1.2", "0.5")]));
    const cwd = new URL("..", import.meta.url).pathname;
    const run = (args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["task", "-q", "score", ...args],
        cwd,
        stdout: "piped",
        stderr: "piped",
      })
        .output();
    const o = await run(["--pred", `${dir}/sub.csv`, "--truth", `${dir}/train.csv`]);
    const out = new TextDecoder().decode(o.stdout), err = new TextDecoder().decode(o.stderr);
    if (!o.success) throw new Error(`score failed: ${err}`);
    const j = JSON.parse(out);
    // One all-negative study, every p = 0.5: every BCE is ln 2.
    assertClose(
      [j.score, ...TARGETS.map((t) => j.perTarget[t])],
      new Array(9).fill(Math.LN2),
      "cli",
      1e-15,
      0,
    );
    if (j.studies !== 1) throw new Error(`studies ${j.studies}`);
    // Beside it the oracle constant of that one study (all negative: every probability at the clip 0.01).
    assertClose(j.constant.probabilities, new Array(8).fill(0.01), "oracle constant", 0, 0);
    assertClose([j.ratio], [j.score / j.constant.score], "ratio", 1e-15, 0);
    if (!j.constant.source.includes("oracle")) throw new Error(`source ${j.constant.source}`);
    // One study: every resample is that study, so the interval is the difference itself.
    const d = j.difference;
    assertClose(
      [d.difference, d.low, d.high],
      new Array(3).fill(j.score - j.constant.score),
      "difference",
      1e-15,
      0,
    );
    if (d.studies !== 1 || d.level !== 0.95) throw new Error(`difference ${JSON.stringify(d)}`);
    const withLabels = JSON.parse(
      new TextDecoder().decode(
        (await run([
          "--pred",
          `${dir}/sub.csv`,
          "--truth",
          `${dir}/train.csv`,
          "--train-labels",
          `${dir}/train.csv`,
        ]))
          .stdout,
      ),
    );
    if (!withLabels.constant.source.includes(`${dir}/train.csv (3 studies`)) {
      throw new Error(`source ${withLabels.constant.source}`);
    }
    const bad = await run(["--pred", `${dir}/missing.csv`, "--truth", `${dir}/train.csv`]);
    const msg = new TextDecoder().decode(bad.stderr);
    if (bad.code !== 1 || !msg.includes("missing.csv")) throw new Error(`bad file: code ${bad.code}, ${msg}`);
    const usage = await run(["--pred", `${dir}/sub.csv`]);
    if (usage.code !== 2 || !new TextDecoder().decode(usage.stderr).includes("--truth is required")) {
      throw new Error(`usage: code ${usage.code}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("score: a constant prediction's score by hand", () => {
  const labels = [[1, 0, 1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [
    1,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
  ]];
  // By hand for one study: BCE of each target, weights 14/7 (overall) and 2/1 (vertebrae).
  const p = [0.75, 0.25, 0.75, 0.25, 0.25, 0.25, 0.25, 0.5], y = [1, 0, 1, 0, 0, 0, 0, 1];
  let num = 0, den = 0;
  for (let j = 0; j < 8; j++) {
    const w = j === 0 ? (y[j] ? 14 : 7) : (y[j] ? 2 : 1);
    num += w * -Math.log(y[j] ? p[j] : 1 - p[j]), den += w;
  }
  const one = constantScore(p, new Map([["a", y]]));
  assertClose([one], [num / den], "constant score of one study", 0, 1e-12);
  const truth = new Map(labels.map((l, i) => [`s${i}`, l]));
  assertClose(
    [constantScore(p, truth)],
    [competitionScore(new Map(labels.map((_, i) => [`s${i}`, p])), truth).score],
    "constant score",
    0,
    1e-12,
  );
});

/**
 * DICOM series reading against files written by pydicom (tests/dicom_fixtures.py) and converted by dcmtk and
 * GDCM into every transfer syntax the RSNA data uses: stored values must equal the source exactly for the
 * lossless codecs, whatever the file names and slice order; bad folders give errors naming the file and the
 * problem.
 */
import { readDicomFile, readDicomSeries, toHounsfield } from "../data/dicom.ts";
import { assertRejectsWith } from "./helpers.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";
const FIX = new URL("./dicom_fixtures.py", import.meta.url).pathname;

async function sh(cmd: string, args: string[]): Promise<string> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(o.stderr)}`);
  return new TextDecoder().decode(o.stdout).trim();
}

async function convert(src: string, dst: string, tool: string, args: string[]): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    if (!e.name.endsWith(".dcm")) continue;
    await sh(tool, [...args, `${src}/${e.name}`, `${dst}/${e.name}`]);
  }
}

function truthOf(path: string, signed: boolean): Int16Array | Uint16Array {
  const b = Deno.readFileSync(path);
  return signed
    ? new Int16Array(b.buffer, b.byteOffset, b.length / 2)
    : new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
}

function sameValues(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: ${a.length} values vs ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${what}: value ${i} is ${a[i]}, expected ${b[i]}`);
  }
}

Deno.test("DICOM series in every transfer syntax decode to the source values", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    await sh(PY, [FIX, `${dir}/raw`, "--truth", `${dir}/truth.bin`]);
    await sh(PY, [FIX, `${dir}/u12raw`, "--pixel", "uint12", "--truth", `${dir}/truth12.bin`]);
    await sh(PY, [FIX, `${dir}/rev`, "--order", "cranial-first", "--truth", `${dir}/truth_rev.bin`]);
    const truth = truthOf(`${dir}/truth.bin`, true);
    const conversions: [string, string, string[], string][] = [
      ["implicit VR LE", "dcmconv", ["+ti"], "1.2.840.10008.1.2"],
      ["deflated explicit LE", "dcmconv", ["+td"], "1.2.840.10008.1.2.1.99"],
      ["explicit VR big endian", "dcmconv", ["+tb"], "1.2.840.10008.1.2.2"],
      ["JPEG Lossless SV1 (dcmtk)", "dcmcjpeg", [], "1.2.840.10008.1.2.4.70"],
      ["JPEG Lossless SV1 (GDCM)", "gdcmconv", ["--jpeg"], "1.2.840.10008.1.2.4.70"],
      ["JPEG Lossless process 14, predictor 6", "dcmcjpeg", ["+el", "+sv", "6"], "1.2.840.10008.1.2.4.57"],
      ["JPEG Lossless, several fragments", "dcmcjpeg", ["+fs", "1"], "1.2.840.10008.1.2.4.70"],
      ["JPEG-LS lossless (dcmtk)", "dcmcjpls", [], "1.2.840.10008.1.2.4.80"],
      ["JPEG-LS lossless (GDCM)", "gdcmconv", ["--jpegls"], "1.2.840.10008.1.2.4.80"],
      ["JPEG 2000 lossless (GDCM)", "gdcmconv", ["--j2k"], "1.2.840.10008.1.2.4.90"],
      ["RLE lossless (dcmtk)", "dcmcrle", [], "1.2.840.10008.1.2.5"],
    ];
    await t.step("explicit VR LE (pydicom), shuffled file names", async () => {
      const s = await readDicomSeries(`${dir}/raw`);
      sameValues(s.pixels, truth, "pixels");
      if (s.shape.join() !== "5,48,48" || s.spacing.join() !== "2.5,0.5,0.5") {
        throw new Error(`geometry ${s.shape} ${s.spacing}`);
      }
      if (s.origin[2] !== -90) throw new Error(`slice 0 should be the most cranial (z -90), got ${s.origin}`);
      if (!(s.pixels instanceof Int16Array)) throw new Error("signed data should be Int16Array");
      const hu = toHounsfield(s);
      if (hu[0] !== -3024) throw new Error(`HU of the padding row ${hu[0]}`);
    });
    await t.step("reversed slice order gives the same volume", async () => {
      const s = await readDicomSeries(`${dir}/rev`);
      sameValues(s.pixels, truthOf(`${dir}/truth_rev.bin`, true), "pixels");
      if (s.origin[2] !== -90) throw new Error(`origin ${s.origin}`);
    });
    for (const [name, tool, args, ts] of conversions) {
      await t.step(name, async () => {
        const out = `${dir}/${name.replace(/[^a-z0-9]+/gi, "_")}`;
        await convert(`${dir}/raw`, out, tool, args);
        const s = await readDicomSeries(out);
        if (s.transferSyntax !== ts) throw new Error(`transfer syntax ${s.transferSyntax}, expected ${ts}`);
        sameValues(s.pixels, truth, "pixels");
      });
    }
    for (
      const [name, tool, args] of [["12-bit unsigned, JPEG Lossless", "dcmcjpeg", []], [
        "12-bit unsigned, JPEG-LS",
        "dcmcjpls",
        [],
      ], [
        "12-bit unsigned, JPEG 2000",
        "gdcmconv",
        ["--j2k"],
      ]] as [string, string, string[]][]
    ) {
      await t.step(name, async () => {
        const out = `${dir}/${name.replace(/[^a-z0-9]+/gi, "_")}`;
        await convert(`${dir}/u12raw`, out, tool, args);
        const s = await readDicomSeries(out);
        if (!(s.pixels instanceof Uint16Array)) throw new Error("unsigned data should be Uint16Array");
        sameValues(s.pixels, truthOf(`${dir}/truth12.bin`, false), "pixels");
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad DICOM folders give errors naming the file and the problem", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/empty`);
    await assertRejectsWith(readDicomSeries(`${dir}/empty`), `${dir}/empty`, "no .dcm files");
    await assertRejectsWith(readDicomSeries(`${dir}/nope`), `${dir}/nope`, "cannot list");
    await sh(PY, [FIX, `${dir}/a`, "--truth", `${dir}/t.bin`]);
    await Deno.writeTextFile(`${dir}/a/notes.dcm`, "this is not DICOM");
    await assertRejectsWith(readDicomSeries(`${dir}/a`), `${dir}/a/notes.dcm`, "not a readable DICOM file");
    await Deno.remove(`${dir}/a/notes.dcm`);
    const bytes = await Deno.readFile(`${dir}/a/3.dcm`);
    await Deno.writeFile(`${dir}/a/3.dcm`, bytes.subarray(0, bytes.length - 1000));
    await assertRejectsWith(readDicomSeries(`${dir}/a`), `${dir}/a/3.dcm`);
    await sh(PY, [FIX, `${dir}/b`, "--truth", `${dir}/t.bin`, "--slices", "6"]);
    // Remove the slice in the middle of z (files are named at random, so find it by position).
    const s = await readDicomSeries(`${dir}/b`);
    await Deno.remove(s.files[2]);
    await assertRejectsWith(readDicomSeries(`${dir}/b`), "missing between", s.files[1], s.files[3]);
    await sh(PY, [FIX, `${dir}/c`, "--truth", `${dir}/t.bin`, "--slices", "3"]);
    const uid2 = await sh(PY, [FIX, `${dir}/c2`, "--truth", `${dir}/t.bin`, "--slices", "4"]);
    for await (const e of Deno.readDir(`${dir}/c2`)) {
      await Deno.rename(`${dir}/c2/${e.name}`, `${dir}/c/x${e.name}`);
    }
    await assertRejectsWith(readDicomSeries(`${dir}/c`), "mixes 2 series");
    const chosen = await readDicomSeries(`${dir}/c`, { series: uid2 });
    if (chosen.shape[0] !== 4 || chosen.uids.series !== uid2) throw new Error("choosing a series");
    await assertRejectsWith(
      readDicomSeries(`${dir}/c`, { series: "1.2.3" }),
      "no slice belongs to series 1.2.3",
    );
    await sh(PY, [FIX, `${dir}/mr`, "--truth", `${dir}/t.bin`, "--modality", "MR"]);
    await assertRejectsWith(readDicomSeries(`${dir}/mr`), 'modality "MR"');
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("truncated and garbage files: the message names the file and what is wrong", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await sh(PY, [FIX, `${dir}/a`, "--truth", `${dir}/t.bin`, "--slices", "3", "--size", "16"]);
    const name = [...Deno.readDirSync(`${dir}/a`)].map((e) => e.name).find((n) => n.endsWith(".dcm"))!;
    const bytes = await Deno.readFile(`${dir}/a/${name}`);
    const pixelsAt = bytes.length - 16 * 16 * 2;
    await Deno.writeFile(`${dir}/a/${name}`, bytes.subarray(0, bytes.length - 100));
    await assertRejectsWith(
      readDicomSeries(`${dir}/a`),
      `${dir}/a/${name}: not a readable DICOM file (truncated: the element (7FE0,0010) at byte ${pixelsAt} ` +
        `needs 512 bytes, the file has ${bytes.length - 100})`,
    );
    await Deno.writeFile(`${dir}/a/${name}`, bytes.subarray(0, 200));
    await assertRejectsWith(readDicomSeries(`${dir}/a`), `${dir}/a/${name}: `, "truncated: the file meta");
    const garbage = new Uint8Array(4000).map((_, i) => (i * 2654435761) >>> 24);
    await Deno.writeFile(`${dir}/a/${name}`, garbage);
    await assertRejectsWith(
      readDicomSeries(`${dir}/a`),
      `${dir}/a/${name}: not a readable DICOM file (`,
      "DICM",
    );
    // Every cut of the file: the file's name and a message, never "[object Object]" nor a bare parser error.
    for (let cut = 0; cut < bytes.length; cut++) {
      let msg = "";
      try {
        readDicomFile(bytes.subarray(0, cut), "cut.dcm");
      } catch (e) {
        msg = (e as Error).message;
      }
      const ok = msg.startsWith("cut.dcm: ") && !msg.includes("[object Object]") &&
        (/truncated: |: a DICOM file starts with/.test(msg) || msg.includes("has no image"));
      if (!ok) throw new Error(`cut at ${cut} of ${bytes.length} bytes: "${msg}"`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

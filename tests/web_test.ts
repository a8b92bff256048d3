/**
 * The browser page (`deno task serve`) in a real browser: Debian's chromium, headless, WebGPU through its
 * own SwiftShader, driven by puppeteer-core (one launch for the module). The page's ops and a tiny CSN
 * forward equal Deno's on lavapipe; its pipeline on a phantom study (uploaded as files) gives the
 * probabilities of `runInference` on the same folder and weights, and its table says "not found" for the
 * vertebrae runInference found no voxels of; series in every transfer syntax (JPEG-LS, JPEG 2000, deflated,
 * JPEG Lossless, RLE, implicit VR, big endian; pydicom, dcmtk and GDCM as in tests/dicom_test.ts) read in the
 * page give Deno's stored values; a non-DICOM drop shows the page's error.
 * A screenshot of the result view lands in out/tests/web/result.png.
 *
 * Tolerances: ops and forward |page - deno| <= 1e-4 * (1 + |deno|) (fp32 on two different Vulkan CPU
 * drivers: accumulation orders differ), argmax exact; probabilities |page - deno| <= 1e-4.
 */
import puppeteer from "puppeteer-core";
import { models, nn, openDevice } from "../mod.ts";
import { saveCheckpoint } from "../io/files.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { runInference } from "../infer/pipeline.ts";
import { csnForward, opsSuite } from "../web/checks.ts";
import { serveWeb } from "../web/serve.ts";
import { probabilityRows } from "../web/rows.ts";
import { NOT_FOUND } from "../infer/report.ts";
import { readDicomSeries } from "../data/dicom.ts";

const CHROMIUM = "/usr/bin/chromium";
const OUT = new URL("../out/tests/web/", import.meta.url).pathname;

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

function close(name: string, got: number[], want: number[], tol: number) {
  assert(got.length === want.length, `${name}: ${got.length} values in the page, ${want.length} in Deno`);
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i]));
    if (!(e <= worst)) (worst = e), (at = i);
  }
  assert(worst <= tol, `${name}: page ${got[at]} vs Deno ${want[at]} at ${at} (error ${worst} > ${tol})`);
}

const hasChromium = await Deno.stat(CHROMIUM).then(() => true, () => false);

Deno.test('web: the probability rows say "not found" for vertebrae without a box, as the report', () => {
  const p = [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.123456];
  const rows = probabilityRows(p, { "1": [[0, 0, 0, 1, 1, 1], 1], "7": [[0, 0, 0, 1, 1, 1], 1] });
  const want = ["0.5000", "0.1000", NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, "0.1235"];
  assert(rows.map((r) => r.text).join() === want.join(), `rows: ${rows.map((r) => r.text)}`);
  assert(rows[2].probability === null && rows[7].probability === p[7], "probability of the rows");
  assert(probabilityRows(p, {})[0].text === "0.5000", "patient_overall is always shown");
  assert(NOT_FOUND === "not found", NOT_FOUND);
});

async function sh(cmd: string, args: string[]): Promise<void> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(o.stderr)}`);
}

Deno.test({
  name: "web: the page in chromium (WebGPU on SwiftShader) equals Deno",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const tmp = await Deno.makeTempDir({ prefix: "csn-web-" });
    await Deno.mkdir(OUT, { recursive: true });
    const device = await openDevice();
    const SEG = {
      model: "CSNUNet",
      encoder: "r26ir",
      baseChannels: 4,
      decoderFilters: [4, 4, 4, 4] as [number, number, number, number],
      lastChannels: 4,
      size: 64,
    };
    const CLS = { model: "CSNClassifier", encoder: "r26ir", baseChannels: 4, dropout: 0.5, crop: [8, 32] };
    nn.seedInit(3);
    const seg = new models.CSNUNet({ device, ...SEG });
    await saveCheckpoint(`${tmp}/seg.safetensors`, seg.stateDict(), { config: { model: SEG } });
    seg.dispose();
    nn.seedInit(10);
    const cls = new models.CSNClassifier({ device, encoder: "r26ir", baseChannels: 4, numClasses: 8 });
    await saveCheckpoint(`${tmp}/cls.safetensors`, cls.stateDict(), { config: { model: CLS } });
    cls.dispose();
    await writeSyntheticDataset({ out: `${tmp}/data`, studies: 1, seed: 5, size: 64, maskFraction: 0 });
    const weights = `${tmp}/seg.safetensors,${tmp}/cls.safetensors`;
    const [uid] = [...Deno.readDirSync(`${tmp}/data/train_images`)].map((e) => e.name);
    const studyDir = `${tmp}/data/train_images/${uid}`;

    const server = await serveWeb({ weights, port: 0 });
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      userDataDir: `${tmp}/profile`,
      args: [
        "--headless=new",
        "--no-sandbox",
        "--enable-unsafe-webgpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1100, height: 900 });
      const logs: string[] = [];
      page.on("console", (m) => logs.push(m.text()));
      page.on("pageerror", (e) => logs.push(String(e)));
      await page.goto(server.url);
      const state = () => page.evaluate(() => (globalThis as any).csn?.state as string);
      await page.waitForFunction(() => ["ready", "error"].includes((globalThis as any).csn?.state), {
        timeout: 60_000,
      });
      assert(
        await state() === "ready",
        `page not ready: ${await page.$eval("#error", (e) => e.textContent)} ${logs.join("\n")}`,
      );
      const adapter = await page.$eval("#adapter", (e) => e.textContent ?? "");
      console.log(`page adapter: ${adapter}`);

      await t.step("ops and a tiny CSN forward in the page equal Deno's", async () => {
        const got = await page.evaluate(() => (globalThis as any).csn.opsSuite(1)) as Record<
          string,
          number[]
        >;
        const want = await opsSuite(device, 1);
        for (const k of Object.keys(want)) close(`F.${k}`, got[k], want[k], k === "argmax" ? 0 : 1e-4);
        const gotF = await page.evaluate(() => (globalThis as any).csn.csnForward(2)) as Record<
          string,
          number[]
        >;
        const wantF = await csnForward(device, 2);
        for (const k of Object.keys(wantF)) close(`CSN ${k}`, gotF[k], wantF[k], 1e-4);
      });

      await t.step("the page's pipeline on a phantom study equals runInference's", async () => {
        const out = `${tmp}/out`;
        await runInference({
          data: `${tmp}/data`,
          weights,
          out,
          tta: "none",
          calibrate: true,
          resume: false,
          window: 384,
          overlap: 128,
          report: false,
          nifti: false,
        });
        const want = JSON.parse((await Deno.readTextFile(`${out}/predictions.jsonl`)).trim()).probabilities;
        const input = await page.$("#files");
        const files = [...Deno.readDirSync(studyDir)].map((e) => `${studyDir}/${e.name}`);
        await (input as any).uploadFile(...files);
        await page.waitForFunction(() => ["done", "error"].includes((globalThis as any).csn.state), {
          timeout: 120_000,
        });
        const r = await page.evaluate(() => (globalThis as any).csn.result);
        assert(r, `page failed: ${await page.$eval("#error", (e) => e.textContent)} ${logs.join("\n")}`);
        console.log(`page: ${r.seconds.toFixed(1)} s for the study, ${JSON.stringify(r.timings)}`);
        const err = Math.max(...want.map((w: number, j: number) => Math.abs(w - r.probabilities[j])));
        assert(
          err <= 1e-4,
          `probabilities: page ${r.probabilities} vs runInference ${want} (max error ${err})`,
        );
        // The table: "not found" exactly for the vertebrae runInference has no box of.
        const found = JSON.parse((await Deno.readTextFile(`${out}/predictions.jsonl`)).trim()).vertebrae;
        const cells = await page.$$eval(
          "#probs tr td:nth-child(2)",
          (tds) => tds.map((td) => td.textContent),
        );
        const notFound = cells.map((c, j) => (c === NOT_FOUND ? j : -1)).filter((j) => j > 0);
        const wantNotFound = [1, 2, 3, 4, 5, 6, 7].filter((v) => !found[String(v)]);
        assert(
          notFound.join() === wantNotFound.join() && cells[0] === r.probabilities[0].toFixed(4) &&
            r.rows.join() === cells.join(),
          `table ${cells} vs vertebrae found by runInference ${Object.keys(found)}`,
        );
        console.log(`page table: ${cells.join(" ")}`);
        const links = await page.$$eval("#csv, #nifti", (as) => as.map((a) => (a as HTMLAnchorElement).href));
        assert(links.every((h) => h.startsWith("blob:")), `downloads not ready: ${links}`);
        const csv = await page.evaluate(async () =>
          await (await fetch((document.getElementById("csv") as HTMLAnchorElement).href)).text()
        );
        assert(
          csv.split("\n")[1].startsWith(`${uid}_C1,`) && csv.trim().split("\n").length === 9,
          `csv: ${csv}`,
        );
        await page.screenshot({ path: `${OUT}/result.png`, fullPage: true });
      });

      await t.step(
        "every transfer syntax read in the page equals Deno's reader",
        async () => {
          const py = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";
          const fix = new URL("./dicom_fixtures.py", import.meta.url).pathname;
          await sh(py, [
            fix,
            `${tmp}/dcm/raw`,
            "--slices",
            "3",
            "--size",
            "32",
            "--truth",
            `${tmp}/dcm/t.bin`,
          ]);
          const conversions: [string, string, string[], string][] = [
            ["JPEG-LS", "dcmcjpls", [], "1.2.840.10008.1.2.4.80"],
            ["JPEG 2000", "gdcmconv", ["--j2k"], "1.2.840.10008.1.2.4.90"],
            ["deflated", "dcmconv", ["+td"], "1.2.840.10008.1.2.1.99"],
            ["JPEG Lossless", "dcmcjpeg", [], "1.2.840.10008.1.2.4.70"],
            ["RLE", "dcmcrle", [], "1.2.840.10008.1.2.5"],
            ["implicit VR", "dcmconv", ["+ti"], "1.2.840.10008.1.2"],
            ["big endian", "dcmconv", ["+tb"], "1.2.840.10008.1.2.2"],
          ];
          for (const [name, tool, args, ts] of conversions) {
            const dir = `${tmp}/dcm/${name.replace(/\W+/g, "_")}`;
            await Deno.mkdir(dir);
            const names = [...Deno.readDirSync(`${tmp}/dcm/raw`)].map((e) => e.name);
            for (const n of names) await sh(tool, [...args, `${tmp}/dcm/raw/${n}`, `${dir}/${n}`]);
            const want = await readDicomSeries(dir);
            const files = names.map((n) => ({ name: n, bytes: [...Deno.readFileSync(`${dir}/${n}`)] }));
            const got = await page.evaluate((f) => (globalThis as any).csn.readSeries(f), files).catch(
              (e) => {
                throw new Error(`${name} in the page: ${e.message}\n${logs.join("\n")}`);
              },
            );
            assert(
              want.transferSyntax === ts && got.transferSyntax === ts &&
                got.shape.join() === want.shape.join(),
              `${name}: page ${got.transferSyntax} ${got.shape}, Deno ${want.transferSyntax} ${want.shape}`,
            );
            const bad = got.pixels.findIndex((v: number, i: number) => v !== want.pixels[i]);
            assert(bad < 0 && got.pixels.length === want.pixels.length, `${name}: value ${bad} differs`);
          }
        },
      );

      await t.step("a non-DICOM drop shows the page's error", async () => {
        await page.evaluate(() => {
          const dt = new DataTransfer();
          dt.items.add(new File(["just some notes"], "notes.txt", { type: "text/plain" }));
          document.getElementById("drop")!.dispatchEvent(
            new DragEvent("drop", { dataTransfer: dt, bubbles: true }),
          );
        });
        await page.waitForFunction(() => (globalThis as any).csn.state === "error", { timeout: 30_000 });
        const msg = await page.$eval("#error", (e) => (e as HTMLElement).hidden ? "" : e.textContent ?? "");
        assert(/notes\.txt: not a readable DICOM file/.test(msg), `error shown: "${msg}"`);
      });
    } finally {
      await browser.close();
      await server.close();
      device.destroy();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});

/**
 * The browser page (`deno task serve`) in a real browser: Debian's chromium, headless, WebGPU through its
 * own SwiftShader, driven by puppeteer-core (one launch for the module). The page's ops and a tiny CSN
 * forward equal Deno's on lavapipe; its pipeline on a phantom study (uploaded as files) gives the
 * probabilities of `runInference` on the same folder and weights; a non-DICOM drop shows the page's error.
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

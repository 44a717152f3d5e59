/**
 * The web console in a real browser: playwright-core drives Debian's chromium (headless, never a
 * downloaded browser) against two `holdfast daemon`s in network namespaces (a farm module on both, a mirror
 * module between them with a replicated directory and the record app). Log in with a token, see every node and state, click swap on the mirror, confirm,
 * see the roles change; a screenshot is kept under artifacts/. It lives in the lab layer (not test/e2e)
 * because the cluster needs namespaces: chromium itself runs inside a client namespace (an `nsenter`
 * wrapper as its executable; playwright's pipes survive the exec) so that it reaches the nodes' addresses.
 * Skipped with a message when chromium or root is missing.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DaemonCluster, REPO, writeRecordAppHooks } from "../../examples/daemon/lab-cluster.js";
import { Lab } from "../../src/testing/lab.js";

const CHROMIUM = "/usr/bin/chromium";
const isRoot = process.getuid?.() === 0;
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`daemon-console: skipped: ${CHROMIUM} is missing (apt-get install chromium; scripts/setup.sh does it)`);
if (!isRoot) console.warn("daemon-console: skipped: needs root (network namespaces)");

let lab: Lab;
let cluster: DaemonCluster;
let browser: Browser;
let page: Page;
let wrapDir: string;

const cell = (node: string, module: string) => `td.cell[data-node="${node}"][data-module="${module}"]`;

/** Waits until the element's text contains `text`. */
async function waitText(selector: string, text: string): Promise<void> {
  await page.locator(selector, { hasText: text }).waitFor({ timeout: 20_000 });
}

async function expectCell(node: string, module: string, state: string, ready = true): Promise<void> {
  await page.waitForSelector(`${cell(node, module)}[data-state="${state}"][data-ready="${ready}"][data-transient="false"]`, { timeout: 20_000 });
}

describe.skipIf(!isRoot || !hasChromium)("web console in chromium", () => {
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
    try {
      cluster = await DaemonCluster.start(lab, {
        modules: (dir) => {
          const app = writeRecordAppHooks(dir);
          return [
            { name: "web", kind: "farm", hooks: { start_both: `${dir}/hooks/start_both.sh`, stop_both: `${dir}/hooks/stop_both.sh` } },
            { name: "db", kind: "mirror", mirror: { defaultPrimary: "n0" }, hooks: { start_prim: app.start, stop_prim: app.stop } },
          ];
        },
        // A replicated directory (FUSE helper) behind the mirror: the console shows its replication on the cells.
        replication: (node, dir) => ({ db: { mode: "sync", directories: [{ path: join(dir, node, "db"), backing: join(dir, node, "db.backing") }], statsIntervalMs: 250 } }),
      });
      wrapDir = mkdtempSync(join(tmpdir(), "hf-chromium-"));
      const wrapper = join(wrapDir, "chromium-in-ns");
      const client = lab.clients[0];
      if (!client) throw new Error("lab has no client");
      writeFileSync(wrapper, `#!/bin/sh\nexec ${lab.nsenterArgs(client).join(" ")} ${CHROMIUM} "$@"\n`);
      chmodSync(wrapper, 0o755);
      browser = await chromium.launch({
        executablePath: wrapper,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        timeout: 60_000,
      });
      page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    } catch (e) {
      await cluster?.stop();
      await lab.destroy();
      throw e;
    }
  });

  afterAll(async () => {
    await browser?.close();
    await cluster?.stop();
    await lab?.destroy();
    if (wrapDir) rmSync(wrapDir, { recursive: true, force: true });
  });

  it("asks for a token, refuses a wrong one, and lets a control token in", async () => {
    await page.goto(`${cluster.node("n0").url}/`);
    await page.waitForSelector("#login:not([hidden])");
    await page.fill("#token", "not-a-token");
    await page.click("#login-form button[type=submit]");
    await waitText("#login-error", "401");
    await page.fill("#token", cluster.tokens.control);
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#main:not([hidden])");
  });

  it("shows every node and every module's state", async () => {
    await expectCell("n0", "web", "UP");
    await expectCell("n1", "web", "UP");
    await expectCell("n0", "db", "PRIM");
    await expectCell("n1", "db", "SECOND");
    const headers = await page.$$eval("#grid tr:first-child th", (ths) => ths.map((t) => t.textContent?.trim()));
    expect(headers).toEqual(["module", "n0", "n1"]);
    expect(await page.textContent("#view")).toMatch(/\[n0, n1\]/);
    // The mirror's replication (from the API's module details) on its cells: the primary in sync, the secondary too.
    await page.waitForSelector(`${cell("n0", "db")} .repl[data-replication="sync"][data-percent="100"]`, { timeout: 20_000 });
    await page.waitForSelector(`${cell("n1", "db")} .repl[data-replication="in sync"][data-percent="100"]`, { timeout: 20_000 });
    await waitText("#details-body", "replication");
  });

  it("swaps the mirror from the console after confirmation, and shows the new roles", async () => {
    // Cancelling the confirmation does nothing.
    await page.click(`${cell("n1", "db")} button[data-command="swap"]`);
    await page.waitForSelector("#confirm[open]");
    expect(await page.textContent("#confirm-text")).toContain('"swap" on module db, node n1');
    await page.click('#confirm button[value="cancel"]');
    await expectCell("n0", "db", "PRIM");

    await page.click(`${cell("n1", "db")} button[data-command="swap"]`);
    await page.waitForSelector("#confirm[open]");
    await page.click("#confirm-ok");
    await waitText("#command-result", "accepted");
    await expectCell("n1", "db", "PRIM");
    await expectCell("n0", "db", "SECOND");
    // The data path followed: n1 replicates to n0 (a resync by log after the handover, then sync).
    await page.waitForSelector(`${cell("n1", "db")} .repl[data-replication="sync"]`, { timeout: 20_000 });
    await page.waitForSelector(`${cell("n0", "db")} .repl[data-replication="in sync"]`, { timeout: 20_000 });
    // The event log panel shows the module's decisions.
    await page.selectOption("#log-module", "db");
    await waitText("#log", "state");
    mkdirSync(join(REPO, "artifacts"), { recursive: true });
    await page.screenshot({ path: join(REPO, "artifacts", "console-after-swap.png"), fullPage: true });
    expect(existsSync(join(REPO, "artifacts", "console-after-swap.png"))).toBe(true);
  });

  it("shows a refusal from the module engine", async () => {
    await page.click(`${cell("n1", "db")} button[data-command="prim"]`);
    await page.waitForSelector("#confirm[open]");
    await page.click("#confirm-ok");
    await waitText("#command-result", "refused");
    expect(await page.textContent("#command-result")).toMatch(/already primary/);
  });
});

// Drives the web board in headless Chromium: it loads, shows the stream as live, a new
// incident appears without a reload with its stage and SLA time left, the acknowledge button
// (with the token) changes its status, the stage moves from the page, two action runs waiting
// for approval are refused with the responder's token then approved and denied with the
// admin's, the component panel shows the store and the sources, and a screenshot is kept.
// Usage: node board.mjs BOARD_URL TOKEN SHOT.png CONTROL_SOCKET ADMIN_TOKEN
import { chromium } from "playwright-core";
import http from "node:http";

const [url, token, shot, socket, admin] = process.argv.slice(2);

// The control socket's API, for making an incident and checking what the board did.
function control(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers: { "content-type": "application/json", host: "localhost" } }, (res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => {
        try { resolve(JSON.parse(data)); } catch (e) { reject(new Error(`not JSON from ${path}: ${data}`)); }
      });
    });
    req.on("error", reject);
    if (body) req.write(JSON.stringify(body));
    req.end();
  });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = null;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForSelector("#live.on", { timeout: 15000 });
  const before = await page.locator("#count-sev1").textContent();

  // A new sev1 incident appears live.
  const inc = await control("POST", "/v1/incidents", { title: "checkout is down", severity: "sev1", service: "api" });
  const row = page.locator(`tr[data-id="${inc.id}"]`);
  await row.waitFor({ timeout: 15000 });
  await page.waitForFunction((n) => document.getElementById("count-sev1").textContent === String(n), Number(before) + 1);

  // Acknowledge it from the page.
  await row.click();
  await page.waitForSelector("#detail:not([hidden])");
  await page.fill("#token", token);
  await page.click("#ack");
  await page.locator(`tr[data-id="${inc.id}"] .status`).filter({ hasText: "acknowledged" }).waitFor({ timeout: 15000 });
  const after = await control("GET", `/v1/incidents/${inc.id}/timeline`);
  const acked = after.timeline.find((e) => e.type === "status_changed" && e.data.to === "acknowledged");
  if (!acked || acked.actor !== "web") throw new Error(`no acknowledgement by web: ${JSON.stringify(after)}`);
  // Stage and SLA: in the row and in the detail.
  await page.locator(`tr[data-id="${inc.id}"] td.stage`).filter({ hasText: "assess" }).waitFor({ timeout: 15000 });
  const slaCell = `tr[data-id="${inc.id}"] td.sla`;
  await page.waitForFunction((sel) => /^resolve \d+m left$/.test(document.querySelector(sel)?.textContent || ""), slaCell, { timeout: 15000 })
    .catch(async () => { throw new Error(`SLA cell after the acknowledgement: ${await page.locator(slaCell).textContent()}`); });
  await page.locator("#d-sla .sla-kind[data-kind=ack]").filter({ hasText: "met" }).waitFor({ timeout: 15000 });
  await page.locator("#d-sla .sla-kind[data-kind=resolve]").filter({ hasText: "left" }).waitFor();

  // Move the stage from the page.
  await page.selectOption("#d-stage", "contain");
  await page.fill("#d-stage-note", "blocking the address");
  await page.click("#stage-move");
  await page.locator(`tr[data-id="${inc.id}"] td.stage`).filter({ hasText: "contain" }).waitFor({ timeout: 15000 });
  const tl = await control("GET", `/v1/incidents/${inc.id}/timeline`);
  const moved = tl.timeline.find((e) => e.type === "stage_changed");
  if (!moved || moved.actor !== "web" || moved.data.to !== "contain") throw new Error(`no stage move by web: ${JSON.stringify(tl)}`);
  // Back without a reason: refused, and the page says why.
  await page.selectOption("#d-stage", "assess");
  await page.click("#stage-move");
  await page.locator("#d-error").filter({ hasText: "reason" }).waitFor({ timeout: 15000 });

  // Approvals: the responder's token is refused with the reason; the admin's decides.
  await page.waitForSelector("#approvals:not([hidden])", { timeout: 15000 });
  const runs = await page.locator("#pending tbody tr").evaluateAll((rs) => rs.map((r) => r.dataset.run));
  if (runs.length !== 2) throw new Error(`pending runs on the page: ${runs}`);
  await page.click(`#pending tr[data-run="${runs[0]}"] button.approve`);
  await page.locator("#a-error").filter({ hasText: "admin token" }).waitFor({ timeout: 15000 });
  await page.fill("#token", admin);
  await page.click(`#pending tr[data-run="${runs[0]}"] button.approve`);
  await page.locator(`#pending tr[data-run="${runs[0]}"]`).waitFor({ state: "detached", timeout: 15000 });
  await page.click(`#pending tr[data-run="${runs[1]}"] button.deny`);
  await page.waitForSelector("#approvals[hidden]", { state: "attached", timeout: 15000 });

  // The component panel.
  await page.locator('#components tr[data-component="store"] .dot.ok').waitFor({ timeout: 15000 });
  await page.locator('#components tr[data-component="event queue"]').waitFor();
  await page.locator('#components tr[data-component="notifications"]').waitFor();

  await page.waitForSelector("#d-timeline li");
  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log(JSON.stringify({ ok: true, incident: inc.id }));
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.error(String(failed.stack || failed));
  process.exit(1);
}

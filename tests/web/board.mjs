// Drives the web board in headless Chromium: it loads, shows the stream as live, a new
// incident appears without a reload, the acknowledge button (with the token) changes its
// status, and a screenshot is kept. Usage: node board.mjs BOARD_URL TOKEN SHOT.png CONTROL_SOCKET
import { chromium } from "playwright-core";
import http from "node:http";

const [url, token, shot, socket] = process.argv.slice(2);

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

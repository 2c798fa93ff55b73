// Drives Debian's Firefox ESR over WebDriver BiDi (puppeteer-core: no browser download) for the
// Python tests (tests/firefox_support.py). One JSON command per stdin line, one JSON answer per
// stdout line:
//   {"id", "cmd": "open", "url"}                  -> {"id", "page"}
//   {"id", "cmd": "eval", "page", "js", "arg"}    -> {"id", "value"} (js: a function's source)
//   {"id", "cmd": "close", "page"}                -> {"id"}
// plus events {"event": "console" | "pageerror", "page", "text"}. Errors: {"id", "error"}.
// stdin's end closes the browser. Prefs keep Firefox off the network (updates, telemetry,
// remote settings, captive portal, prefetch, plugin downloads) and give it a fake camera and
// microphone; ICE may use loopback; mDNS host-address hiding keeps Firefox's default.
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const executablePath = process.env.FIREFOX || "/usr/bin/firefox-esr";
const OFFLINE = "http://127.0.0.1:9/"; // the discard port on loopback: any stray request fails at once

const prefs = {
  // media
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  "media.autoplay.default": 0,
  "media.autoplay.blocking_policy": 0,
  "media.peerconnection.ice.loopback": true,
  ...JSON.parse(process.env.FIREFOX_EXTRA_PREFS || "{}"),
  // off the network
  "app.update.enabled": false,
  "app.update.auto": false,
  "app.update.url": OFFLINE,
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.unified": false,
  "toolkit.telemetry.server": OFFLINE,
  "datareporting.policy.dataSubmissionEnabled": false,
  "datareporting.healthreport.uploadEnabled": false,
  "services.settings.server": OFFLINE,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "network.prefetch-next": false,
  "network.dns.disablePrefetch": true,
  "network.http.speculative-parallel-limit": 0,
  "network.predictor.enabled": false,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "browser.safebrowsing.downloads.enabled": false,
  "browser.safebrowsing.provider.mozilla.updateURL": OFFLINE,
  "extensions.update.enabled": false,
  "extensions.getAddons.cache.enabled": false,
  "extensions.blocklist.enabled": false,
  "browser.search.update": false,
  "browser.topsites.contile.enabled": false,
  "browser.newtabpage.activity-stream.feeds.system.topstories": false,
  "media.gmp-manager.url": OFFLINE,
  "media.gmp-manager.updateEnabled": false,
  "media.gmp-gmpopenh264.autoupdate": false,
  "media.gmp-gmpopenh264.enabled": false,
  "media.gmp-widevinecdm.enabled": false,
  "browser.ping-centre.telemetry": false,
  "geo.provider.network.url": OFFLINE,
  "network.trr.mode": 5,
};

const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const profile = mkdtempSync(join(tmpdir(), "bitbasel-firefox-"));
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  headless: true,
  userDataDir: profile,
  extraPrefsFirefox: prefs,
  args: ["--no-remote"],
  protocolTimeout: 60000,
  dumpio: process.env.FIREFOX_DUMPIO === "1", // Firefox's own output into the driver's stderr (its log)
});
const pages = new Map();
let nextPage = 1;

async function handle(command) {
  switch (command.cmd) {
    case "open": {
      const page = await browser.newPage();
      const id = nextPage++;
      pages.set(id, page);
      page.on("console", (msg) => send({ event: "console", page: id, text: `${msg.type()}: ${msg.text()}` }));
      page.on("pageerror", (err) => send({ event: "pageerror", page: id, text: String(err && err.message) }));
      await page.goto(command.url, { waitUntil: "load" });
      return { page: id };
    }
    case "eval": {
      const page = pages.get(command.page);
      if (!page) throw new Error(`no page ${command.page}`);
      // the function's source, called with one JSON argument
      const value = await page.evaluate(
        (source, arg) => (0, eval)(`(${source})`)(arg),
        command.js,
        command.arg ?? null,
      );
      return { value: value === undefined ? null : value };
    }
    case "close": {
      const page = pages.get(command.page);
      pages.delete(command.page);
      if (page) await page.close();
      return {};
    }
    case "version":
      return { value: await browser.version() };
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
send({ event: "ready", version: await browser.version() });
for await (const line of lines) {
  if (!line.trim()) continue;
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    send({ error: `bad command: ${err.message}` });
    continue;
  }
  handle(command).then(
    (answer) => send({ id: command.id, ...answer }),
    (err) => send({ id: command.id, error: String((err && err.stack) || err) }),
  );
}
await browser.close();
rmSync(profile, { recursive: true, force: true });

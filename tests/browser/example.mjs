// The example web app (examples/web) in a real browser, as a person uses it:
// sign up with a car -> reload -> still signed in, though the refresh token
// was never visible to page JavaScript -> an attacker page on a third
// origin tries to refresh and sign out -> sign out -> reload -> signed out.
// Usage: node example.mjs APP_URL API_URL. The caller checks the server's
// session table afterwards.
import { chromium } from "playwright-core";

const [app, api] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const fail = async (message) => {
  console.error(message);
  await browser.close();
  process.exit(1);
};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  const bodies = [];
  page.on("response", (r) => {
    if (r.url() === api && r.request().method() === "POST") bodies.push(r.text().catch(() => ""));
  });
  const status = page.locator("#status");
  const expectStatus = async (text, step) => {
    await page.waitForFunction((t) => document.getElementById("status")?.textContent === t, text, { timeout: 10000 })
      .catch(async () => fail(`${step}: status is ${await status.textContent()}; ${problems.join("; ")}`));
  };
  const url = `${app}/?api=${encodeURIComponent(api)}`;

  await page.goto(url);
  await expectStatus("Signed out", "first visit");
  await page.getByLabel("Username").fill("webby");
  await page.getByLabel("Password").fill("a long passphrase");
  await page.getByLabel("Car brand").fill("Lada");
  await page.getByLabel("Car model").fill("Niva");
  await page.getByRole("button", { name: "Sign up" }).click();
  await expectStatus("Signed in", "sign-up");
  const cars = await page.locator("#cars").innerText();
  if (!cars.includes("Lada Niva")) await fail(`cars: ${cars}`);
  // (The cookie's Path is /, so document.cookie would show it if it could.)
  if ((await page.evaluate(() => document.cookie)).includes("authql_refresh")) {
    await fail("page JavaScript can read the refresh cookie");
  }
  const cookies = await context.cookies(api);
  const refresh = cookies.find((c) => c.name.endsWith("authql_refresh"));
  if (!refresh || !refresh.httpOnly || !refresh.secure || refresh.name !== "__Host-authql_refresh") {
    await fail(`the browser holds no __Host- HttpOnly refresh cookie: ${JSON.stringify(cookies)}`);
  }
  if ((await Promise.all(bodies)).some((b) => b.includes(refresh.value))) {
    await fail("a JSON body carried the refresh token");
  }

  await page.reload();
  await expectStatus("Signed in", "reload");
  if ((await page.evaluate(() => window.lastRefreshToken)) !== "") {
    await fail("cookie-only mode: refreshSession's JSON carried a refresh token");
  }
  const sessions = await page.locator("#sessions").innerText();
  if (!sessions.includes("this browser")) await fail(`sessions: ${sessions}`);

  // A third origin, in the same browser (so it would have the cookie if it
  // could use it): it can neither refresh nor sign out nor read an answer.
  const attacker = await context.newPage();
  await attacker.route("http://attacker.test/**", (route) =>
    route.fulfill({ contentType: "text/html", body: "<!doctype html><title>attacker</title>" }));
  await attacker.goto("http://attacker.test/");
  const outcome = await attacker.evaluate(async (api) => {
    const tries = [];
    for (const query of ["mutation { refreshSession { __typename } }", "mutation { signOut { __typename } }"]) {
      try {
        const r = await fetch(api, {
          method: "POST", credentials: "include",
          headers: { "content-type": "application/json", "x-requested-with": "x" },
          body: JSON.stringify({ query }),
        });
        tries.push(`read ${await r.text()}`);
      } catch (e) {
        tries.push("blocked");
      }
      // A "simple" request needs no preflight, but cannot be JSON.
      await fetch(api, { method: "POST", mode: "no-cors", credentials: "include",
                         headers: { "content-type": "text/plain" }, body: JSON.stringify({ query }) })
        .catch(() => {});
    }
    return tries;
  }, api);
  if (outcome.some((t) => t !== "blocked")) await fail(`the attacker got answers: ${outcome}`);
  await attacker.close();

  await page.reload();
  await expectStatus("Signed in", "after the attacker");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expectStatus("Signed out", "sign-out");
  await page.reload();
  await expectStatus("Signed out", "reload after sign-out");
  if (problems.length) await fail(problems.join("\n"));
  console.log("example app: sign-up, silent refresh, attacker refused, sign-out: ok");
} catch (e) {
  await fail(`example app: ${e.stack ?? e}`);
}
await browser.close();

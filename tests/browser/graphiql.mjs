// Drives GraphiQL at BASE_URL the way a person does: runs the default
// document (a sign-up), copies the access token into the Headers tab, clears
// the editor, types `me` with the keyboard, presses the Run button, reads
// the result pane; runs again with Ctrl-Enter, and after a reload. No
// request may leave the page's origin, and the console stays clean.
// Exits non-zero with what went wrong. Usage: node graphiql.mjs BASE_URL
import { chromium } from "playwright-core";

const base = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const fail = async (message) => {
  console.error(message);
  await browser.close();
  process.exit(1);
};
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  const posts = [];
  const elsewhere = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(base + "/") && !r.url().startsWith("data:")) elsewhere.push(r.url());
    if (r.method() === "POST" && r.url().endsWith("/graphql")) posts.push(r.postData());
  });
  await page.goto(base + "/", { waitUntil: "networkidle" });

  const editor = page.locator(".graphiql-query-editor .CodeMirror").first();
  await editor.waitFor({ timeout: 15000 });
  const result = page.locator(".result-window");

  const waitForResult = async (needle) => {
    await page
      .waitForFunction((n) => document.querySelector(".result-window")?.innerText.includes(n), needle, {
        timeout: 10000,
      })
      .catch(() => {});
    return result.innerText();
  };

  // The default document signs up; its answer carries the access token.
  await page.locator("button.graphiql-execute-button").click();
  const signedUp = await waitForResult('"accessToken"');
  const token = /"accessToken": "([^"]+)"/.exec(signedUp)?.[1];
  if (!token) await fail(`the default document did not sign up: ${signedUp}`);

  // Headers tab, typed by hand.
  await page.getByRole("button", { name: "Headers" }).click();
  const headers = page.locator(".graphiql-editor-tool .CodeMirror").last();
  await headers.waitFor({ timeout: 5000 });
  await headers.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  // The editor closes brackets and quotes itself: paste-like insertion.
  await page.keyboard.insertText(`{"Authorization": "Bearer ${token}"}`);

  // Types `query`, runs it by `how`, and returns the result pane once it
  // shows `needle` (or what it shows after 10 s).
  const typeAndRun = async (query, how, needle) => {
    await editor.click();
    await page.keyboard.press("Control+A");
    await page.keyboard.press("Delete");
    await page.keyboard.type(query);
    const before = posts.length;
    const answered = page
      .waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/graphql"), {
        timeout: 10000,
      })
      .catch(() => null);
    if (how === "button") {
      await page.locator("button.graphiql-execute-button").click();
    } else {
      await page.keyboard.press("Control+Enter");
    }
    if (!(await answered) || posts.length === before) {
      await fail(`${how}: no request was sent for ${query}; result pane: ${await result.innerText()}`);
    }
    const sent = posts[posts.length - 1] ?? "";
    if (!sent.includes("__typename")) await fail(`${how}: the request did not carry what was typed: ${sent}`);
    return waitForResult(needle);
  };

  let text = await typeAndRun("{ __typename me { username } }", "button", '"username"');
  if (!text.includes('"__typename": "Query"')) await fail(`button: result pane shows ${text}`);
  if (!text.includes('"username": "ivan"')) await fail(`me with the Headers tab's token: ${text}`);
  text = await typeAndRun("query Again { __typename }", "keyboard", '"__typename": "Query"');
  if (!text.includes('"__typename": "Query"')) await fail(`Ctrl-Enter: result pane shows ${text}`);
  await page.reload({ waitUntil: "networkidle" });
  await editor.waitFor({ timeout: 15000 });
  text = await typeAndRun("{ __typename }", "button", '"__typename": "Query"');
  if (!text.includes('"__typename": "Query"')) await fail(`after reload: result pane shows ${text}`);
  if (problems.length) await fail(problems.join("\n"));
  if (elsewhere.length) await fail(`requests left the origin: ${elsewhere.join(", ")}`);
  console.log("graphiql: typed, ran by button and keyboard, reloaded: ok");
} catch (e) {
  await fail(`graphiql: ${e.stack ?? e}`);
}
await browser.close();

// Drives GraphiQL at BASE_URL the way a person does: clears the editor,
// types a query with the keyboard, presses the Run button, reads the
// result pane; then runs again with Ctrl-Enter, and after a reload.
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
  page.on("request", (r) => {
    if (r.method() === "POST" && r.url().endsWith("/graphql")) posts.push(r.postData());
  });
  await page.goto(base + "/", { waitUntil: "networkidle" });

  const editor = page.locator(".graphiql-query-editor .CodeMirror").first();
  await editor.waitFor({ timeout: 15000 });
  const result = page.locator(".result-window");

  const typeAndRun = async (query, how) => {
    await editor.click();
    await page.keyboard.press("Control+A");
    await page.keyboard.press("Delete");
    await page.keyboard.type(query);
    const before = posts.length;
    if (how === "button") {
      await page.locator("button.graphiql-execute-button").click();
    } else {
      await page.keyboard.press("Control+Enter");
    }
    await page.waitForFunction(
      () => document.querySelector(".result-window")?.innerText.includes('"data"'),
      null,
      { timeout: 10000 },
    ).catch(() => {});
    const text = await result.innerText();
    if (posts.length === before) await fail(`${how}: no request was sent for ${query}; result pane: ${text}`);
    const sent = posts[posts.length - 1] ?? "";
    if (!sent.includes("__typename")) await fail(`${how}: the request did not carry what was typed: ${sent}`);
    return text;
  };

  let text = await typeAndRun("{ __typename }", "button");
  if (!text.includes('"__typename": "Query"')) await fail(`button: result pane shows ${text}`);
  text = await typeAndRun("query Again { __typename }", "keyboard");
  if (!text.includes('"__typename": "Query"')) await fail(`Ctrl-Enter: result pane shows ${text}`);
  await page.reload({ waitUntil: "networkidle" });
  await editor.waitFor({ timeout: 15000 });
  text = await typeAndRun("{ __typename }", "button");
  if (!text.includes('"__typename": "Query"')) await fail(`after reload: result pane shows ${text}`);
  if (problems.length) await fail(problems.join("\n"));
  console.log("graphiql: typed, ran by button and keyboard, reloaded: ok");
} catch (e) {
  await fail(`graphiql: ${e.stack ?? e}`);
}
await browser.close();

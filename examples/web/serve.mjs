// Serves the built app (index.html, dist/app.js) on 127.0.0.1:PORT (or a
// free port), printing `listening PORT`. The app is another origin than
// authql, as a real frontend is. Usage: node serve.mjs [PORT]
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const files = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/app.js": ["dist/app.js", "text/javascript; charset=utf-8"],
};
const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  const file = files[path];
  if (!file) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": file[1] });
  res.end(await readFile(join(root, file[0])));
});
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});

// npm run build: dist/ from the package's sources. The client's one source is the module the
// relay serves (service/progress_relay/static/progress-relay.js): it is copied to
// dist/progress-relay.js byte for byte, so the package and /static/progress-relay.js are the
// same code. Nothing is bundled: every entry stays an ES module that imports
// ./progress-relay.js, so a page importing several entries has one client (one stream, one
// <job-progress> definition). esbuild then bundles the entries in memory, only to fail the
// build on a syntax error or an import that names no export.
import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const served = fileURLToPath(new URL("../../progress_relay/static/progress-relay.js", import.meta.url));
const dist = `${root}dist`;

await rm(dist, { recursive: true, force: true });
await mkdir(dist);
await copyFile(served, `${dist}/progress-relay.js`);
const sources = await readdir(`${root}src`);
for (const name of sources) {
  if (name.endsWith(".js") || name.endsWith(".d.ts")) {
    await copyFile(`${root}src/${name}`, `${dist}/${name}`);
  }
}
await build({
  entryPoints: sources.filter((name) => name.endsWith(".js")).map((name) => `${dist}/${name}`),
  bundle: true,
  write: false,
  outdir: `${root}.build-check`,
  format: "esm",
  external: ["react"],
  logLevel: "warning",
});

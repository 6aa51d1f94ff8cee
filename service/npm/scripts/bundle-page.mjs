// node scripts/bundle-page.mjs ENTRY OUTFILE [--client DIR] [--development]
// Bundles a page that uses the package (React JSX, or Svelte components through esbuild-svelte)
// into one ES module, as an application would: `@progress-relay/client` is resolved by its
// exports map from DIR (the package as installed: an unpacked `npm pack` tarball; by default
// this directory, once `npm run build` made dist/), React and Svelte from this directory's
// node_modules (one copy of each, for the page and the package alike).
// Used for the React example (npm run example) and the test pages (tests/system).
import { build } from "esbuild";
import sveltePlugin from "esbuild-svelte";
import { mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { client: { type: "string", default: root }, development: { type: "boolean" } },
});
if (positionals.length !== 2) {
  console.error("usage: bundle-page.mjs ENTRY OUTFILE [--client DIR] [--development]");
  process.exit(2);
}
const [entry, outfile] = positionals.map((path) => resolve(path));

// A node_modules of one package, the client, for esbuild to resolve it as an installed one.
const modules = await mkdtemp(join(tmpdir(), "progress-relay-page-"));
try {
  await mkdir(join(modules, "@progress-relay"), { recursive: true });
  await symlink(resolve(values.client), join(modules, "@progress-relay", "client"), "dir");
  const mode = values.development ? "development" : "production";
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    nodePaths: [modules, join(root, "node_modules")],
    jsx: "automatic",
    // Svelte's package resolves to its browser runtime under these.
    conditions: ["svelte", "browser", mode],
    mainFields: ["svelte", "browser", "module", "main"],
    define: { "process.env.NODE_ENV": JSON.stringify(mode) },
    minify: mode === "production",
    sourcemap: mode === "development" ? "inline" : false,
    plugins: [sveltePlugin({ compilerOptions: { css: "injected", dev: values.development } })],
    logLevel: "warning",
  });
} finally {
  await rm(modules, { recursive: true, force: true });
}

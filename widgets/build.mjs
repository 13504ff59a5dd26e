// Bundle the widget sources in src/ into medverse_lab/static/ (committed with the package,
// so `pip install` needs no node). Every bundle starts with a banner holding the sha256 of
// the sources; tests/test_widgets_bundle.py recomputes it to catch a stale bundle.
//
//   npm ci && npm run build              # writes ../medverse_lab/static/
//   node build.mjs --outdir /tmp/check   # writes elsewhere (the freshness test uses this)
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const at = args.indexOf("--outdir");
const outdir = at >= 0 ? args[at + 1] : join(here, "..", "medverse_lab", "static");

// The files whose bytes decide the bundle, as paths relative to widgets/ with "/".
function sources() {
  const walk = (dir) => readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
  const files = ["build.mjs", "package.json", "package-lock.json"].map((f) => join(here, f));
  return [...files, ...walk(join(here, "src"))]
    .map((p) => relative(here, p).split("\\").join("/"))
    .sort();
}

// sha256 over "path\0bytes\0" of every source file, in sorted path order.
const hash = createHash("sha256");
for (const path of sources()) {
  hash.update(path + "\0");
  hash.update(readFileSync(join(here, path)));
  hash.update("\0");
}
const digest = hash.digest("hex");
const banner = `/* medverse-lab widgets: built by widgets/build.mjs, do not edit. sources sha256:${digest} */`;

await build({
  // one bundle per widget: every src/*.js whose name does not start with "_", plus the css
  entryPoints: readdirSync(join(here, "src"))
    .filter((name) => (name.endsWith(".js") && !name.startsWith("_")) || name === "widgets.css")
    .sort()
    .map((name) => join(here, "src", name)),
  outdir,
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  minify: false,
  legalComments: "none",
  charset: "utf8",
  banner: { js: banner, css: banner },
  logLevel: "warning",
});
console.log(`built ${outdir} (sources sha256:${digest.slice(0, 12)})`);

// Build dist/ with esbuild: ESM, CommonJS and the <script> file dist/AV.realtime.js (IIFE,
// global AV.realtime). Prints the min+gzip size of the full API and fails above 5 KB.
//   node scripts/build.mjs          write dist/
//   node scripts/build.mjs --check  fail unless the committed dist/ equals a fresh build
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { writeFile, mkdir } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUDGET = 5120;
const check = process.argv.includes('--check');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const { version } = await import(join(root, 'src/version.js'));
if (version !== pkg.version) throw new Error(`src/version.js (${version}) != package.json (${pkg.version})`);

const banner = `/*! confab-realtime ${version} | MIT | AV.realtime v2 API for Confab */`;
const common = { bundle: true, target: 'es2018', write: false, banner: { js: banner }, logLevel: 'warning' };
const outputs = [
  { entryPoints: ['src/index.js'], format: 'esm', outfile: 'dist/confab-realtime.mjs' },
  {
    entryPoints: ['src/index.js'],
    format: 'cjs',
    outfile: 'dist/confab-realtime.cjs',
    // require('confab-realtime') is the function itself, as with leancloud-realtime 2.x
    footer: { js: 'module.exports = module.exports.default;' },
  },
  { entryPoints: ['src/browser.js'], format: 'iife', outfile: 'dist/AV.realtime.js', minify: true },
];

let stale = [];
let size = 0;
for (const o of outputs) {
  const res = await build({ ...common, ...o, absWorkingDir: root });
  for (const f of res.outputFiles) {
    const rel = relative(root, f.path);
    if (rel === 'dist/AV.realtime.js') size = gzipSync(f.contents, { level: 9 }).length;
    if (check) {
      let old = '';
      try {
        old = readFileSync(f.path, 'utf8');
      } catch {}
      if (old !== f.text) stale.push(rel);
    } else {
      await mkdir(dirname(f.path), { recursive: true });
      await writeFile(f.path, f.text);
    }
  }
}
console.log(`dist/AV.realtime.js: ${size} bytes min+gzip (budget ${BUDGET})`);
if (size > BUDGET) {
  console.error(`FAIL: over the ${BUDGET}-byte budget by ${size - BUDGET} bytes`);
  process.exit(1);
}
if (stale.length) {
  console.error(`FAIL: committed dist differs from a fresh build: ${stale.join(', ')}; run: npm run build`);
  process.exit(1);
}
if (check) console.log('dist/ is up to date');

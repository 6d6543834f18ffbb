// Bundles analytics.js from node_modules for a page, as a site owner's build would.
// node build.mjs                  -> dist/analytics.js, window.AnalyticsBrowser for test pages
// node build.mjs ENTRY OUTFILE    -> any other entry (the README's npm example)
import { build } from 'esbuild'

const [entry = 'page/library.js', outfile = 'dist/analytics.js'] = process.argv.slice(2)
await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: 'iife',
  target: 'es2020',
  logLevel: 'warning',
  absWorkingDir: process.cwd(),
  nodePaths: [new URL('./node_modules', import.meta.url).pathname],
})

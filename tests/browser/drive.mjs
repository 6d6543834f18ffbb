// Drives Debian's chromium (headless, through playwright-core) through one scenario against
// ingest, then prints what the page sent and what it was answered, as JSON on stdout.
//
//   node drive.mjs '{"scenario": "sdk", "page": "http://127.0.0.1:P/npm.html", ...}'
//
// Scenarios: "sdk" (analytics.js from npm: alias, identify, page, track, group, in standard or
// batching mode), "unload" (batching mode, events still buffered when the page is left),
// "raw" (fetch with JSON and Authorization, sendBeacon with text/plain), "snippet" (a page
// with a README snippet: it calls page() itself, and track() or the scenario does).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const spec = JSON.parse(process.argv[2])
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]

function segmentSettings({ writeKey, apiHost }) {
  return {
    integrations: { 'Segment.io': { apiKey: writeKey, apiHost, protocol: 'http' } },
    metrics: { sampleRate: 0 },
  }
}

// In the page: load analytics.js with our ingest as its API host and make the calls.
async function sdkCalls({ writeKey, apiHost, person, delivery, settings }) {
  const [analytics] = await window.AnalyticsBrowser.load(
    { writeKey, cdnSettings: settings },
    { integrations: { 'Segment.io': { apiHost, protocol: 'http', deliveryStrategy: delivery } } },
  )
  // As a site does at sign-up: alias while anonymous (previousId: the anonymous id; once a
  // user id is set, analytics.js sends that as alias's userId), then identify.
  await analytics.alias(person)
  await analytics.identify(person, { email: `${person}@example.com`, plan: 'pro' })
  await analytics.page('Docs', 'Pricing', { path: '/pricing' })
  await analytics.track('Signed Up', { plan: 'pro', seats: 3 })
  await analytics.group(`${person}-team`, { name: 'Acme', employees: 50 })
  return { anonymousId: analytics.user().anonymousId() }
}

async function bufferedCalls({ writeKey, apiHost, person, settings }) {
  const delivery = { strategy: 'batching', config: { size: 100, timeout: 600000 } }
  const [analytics] = await window.AnalyticsBrowser.load(
    { writeKey, cdnSettings: settings },
    { integrations: { 'Segment.io': { apiHost, protocol: 'http', deliveryStrategy: delivery } } },
  )
  await analytics.identify(person)
  await analytics.track('Signed Up', { plan: 'free' })
  await analytics.track('Left', { when: 'unload' })
  return { anonymousId: analytics.user().anonymousId() }
}

async function rawCalls({ writeKey, ingest, person }) {
  const basic = 'Basic ' + btoa(`${writeKey}:`)
  const response = await fetch(`http://${ingest}/v1/events`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: basic },
    body: JSON.stringify({ user_id: person, event: 'fetched', event_id: `${person}-fetch` }),
  })
  const event = { user_id: person, event: 'beaconed', event_id: `${person}-beacon`, writeKey }
  const track = { userId: person, event: 'beaconed-segment', messageId: `${person}-b2`, writeKey }
  return {
    fetchStatus: response.status,
    fetchBody: await response.json(),
    beaconQueued: navigator.sendBeacon(`http://${ingest}/v1/events`, JSON.stringify(event)),
    segmentBeaconQueued: navigator.sendBeacon(`http://${ingest}/v1/t`, JSON.stringify(track)),
  }
}

function watch(context, log) {
  const entries = new Map()
  context.on('request', (request) => {
    if (request.method() !== 'POST') return
    const entry = { url: request.url(), headers: request.headers(), body: request.postData() }
    entries.set(request, entry)
    log.push(entry)
  })
  context.on('response', (response) => {
    const entry = entries.get(response.request())
    if (entry) entry.status = response.status()
  })
  context.on('requestfailed', (request) => {
    const entry = entries.get(request)
    if (entry) entry.failure = request.failure()?.errorText ?? 'failed'
  })
}

// Events in POSTs answered 2xx: one per call, or a batch's length. From the proxy's log when
// the page talks to ingest through it (a keepalive request sent while the page unloads is
// not reported to playwright), else from what playwright saw.
async function delivered(log) {
  // The proxy's log from spec.logFrom on: what this run sent.
  const posts = spec.log ? (await (await fetch(spec.log)).json()).slice(spec.logFrom ?? 0) : log
  return posts
    .filter((r) => r.status >= 200 && r.status < 300 && (r.method ?? 'POST') === 'POST')
    .reduce((n, r) => n + (JSON.parse(r.body).batch?.length ?? 1), 0)
}

async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function run(page, log) {
  const settings = segmentSettings(spec)
  const args = { ...spec, settings }
  if (spec.scenario === 'sdk') {
    await page.goto(spec.page)
    const result = await page.evaluate(sdkCalls, args)
    await until(async () => (await delivered(log)) >= 5, 60000, 'five events delivered')
    return result
  }
  if (spec.scenario === 'unload') {
    await page.goto(spec.page)
    const result = await page.evaluate(bufferedCalls, args)
    const sentBefore = await delivered(log)
    await page.goto(spec.blank) // pagehide: analytics.js sends its buffer with keepalive
    await until(async () => (await delivered(log)) >= 3, 20000, 'the buffer sent on unload')
    return { ...result, sentBeforeUnload: sentBefore }
  }
  if (spec.scenario === 'raw') {
    await page.goto(spec.blank)
    const result = await page.evaluate(rawCalls, args)
    await until(() => log.length >= 3, 20000, 'three requests sent')
    return result
  }
  if (spec.scenario === 'snippet') {
    await page.goto(spec.page)
    if (spec.addTrack) {
      await page.waitForFunction(() => window.analytics?.initialized, null, { timeout: 30000 })
      await page.evaluate(() => window.analytics.track('Signed Up', { via: 'snippet' }))
    }
    await until(async () => (await delivered(log)) >= 2, 30000, 'page and track delivered')
    return {}
  }
  throw new Error(`unknown scenario ${spec.scenario}`)
}

const profile = mkdtempSync(join(tmpdir(), 'chromium-profile-'))
const started = Date.now()
const context = await chromium.launchPersistentContext(profile, {
  executablePath: spec.chromium ?? '/usr/bin/chromium',
  args: FLAGS,
})
const log = []
const consoleErrors = []
let result
let error
try {
  watch(context, log)
  const page = context.pages()[0] ?? (await context.newPage())
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()))
  page.on('pageerror', (e) => consoleErrors.push(String(e)))
  result = await run(page, log)
} catch (e) {
  error = String(e.stack ?? e)
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
}
const out = { result, requests: log, consoleErrors, error, seconds: (Date.now() - started) / 1000 }
process.stdout.write(JSON.stringify(out))
process.exit(error ? 1 : 0)

/**
 * Private mode in a real browser: the web app against the real server on a free port,
 * Debian's Chromium (headless, playwright-core), each run in a fresh browser context (empty
 * cache, like a private window). Per variant, interleaved in one run, measured inside the page
 * (performance.now() at the file input's change event, and when the UI shows the result or
 * moves on to the next image; the app's own 'hemocount:*' performance measures):
 *  - first image: selecting one 640 x 480 sample until its counts show (onnxruntime-web, the
 *    model and the session loaded on the way);
 *  - per image: the following images, counted as batches of the 5 samples, --passes times
 *    (p50 over the 640 x 480 ones; the other two are rescaled, which runs the network twice);
 *  - revisit: a second page in the same context (HTTP cache warm), first image again;
 *  - bytes per asset (resource timing), and whether the counts agree with the server's
 *    (onnxruntime-node, fp32) on every sample.
 * Variants: fp32 and int8 (the model the server offers private mode), and fp32 through a host
 * name the server does not count as loopback (hemocount.localhost: this machine to the browser, a
 * secure context that takes brotli), to which it sends the assets compressed.
 * Usage: node dist/bench/browser.js [--out docs/browser.json] [--passes 3] [--rounds 3] [--think MS] [--variants fp32,int8,fp32-compressed]
 */
import { copyFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { loadavg } from 'node:os';
import { basename, join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { probe } from '../src/adapters/image.js';
import { CLASSES, type PerClass } from '../src/core/types.js';
import { loadModel } from '../src/index.js';
import { buildServer, ORT_FILES } from '../src/server/app.js';
import { launchChromium, SAMPLES, tmp } from '../test/helpers.js';
import { machine } from './smears.js';

const arg = (name: string, dflt: string) => {
  const at = process.argv.indexOf(name);
  if (at < 0) return dflt;
  const v = process.argv[at + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`);
  return v;
};
const outFile = process.argv.includes('--out') ? arg('--out', '') : undefined;
const passes = Number(arg('--passes', '3'));
const rounds = Number(arg('--rounds', '3'));
/** Milliseconds between switching private mode on and selecting the first image (a person takes seconds). */
const think = Number(arg('--think', '0'));
if (!(Number.isInteger(passes) && passes >= 1) || !(Number.isInteger(rounds) && rounds >= 1)) throw new Error('--passes and --rounds take whole numbers >= 1');

const VARIANTS = {
  fp32: { precision: 'fp32', host: '127.0.0.1' },
  int8: { precision: 'int8', host: '127.0.0.1' },
  'fp32-compressed': { precision: 'fp32', host: 'hemocount.localhost' },
} as const;
type Variant = keyof typeof VARIANTS;
const variants = arg('--variants', Object.keys(VARIANTS).join(',')).split(',') as Variant[];
for (const v of variants) if (!(v in VARIANTS)) throw new Error(`--variants: ${Object.keys(VARIANTS).join(', ')}; not '${v}'`);

const samples = readdirSync(SAMPLES)
  .filter((f) => f.endsWith('.jpg'))
  .sort()
  .map((f) => join(SAMPLES, f));
// the first image: a 640 x 480 field
const first: string = samples.find((s) => s.endsWith('BloodImage_00004.jpg')) ?? samples[0] ?? '';
if (!first) throw new Error(`no .jpg samples in ${SAMPLES}`);
// The app refuses a picture already in the sample (same name and size), so each pass counts copies
// named '<stem>-<pass>.jpg'; results are reported under the sample's own name.
const passDir = tmp('hemocount-browser-bench-');
const copyAs = (s: string, pass: number) => {
  const to = join(passDir, basename(s).replace(/\.jpg$/, `-${pass}.jpg`));
  copyFileSync(s, to);
  return to;
};
const copiesFor = (pass: number) => samples.map((s) => copyAs(s, pass));
const original = (name: string) => name.replace(/-\d+\.jpg$/, '.jpg');
const sizes = Object.fromEntries(await Promise.all(samples.map(async (s) => [basename(s), await probe(s)] as const)));
const is640x480 = (name: string) => sizes[name]?.width === 640 && sizes[name]?.height === 480;

const median = (v: number[]) => {
  const a = [...v].sort((x, y) => x - y);
  if (!a.length) return NaN;
  return a.length % 2 ? a[(a.length - 1) / 2]! : (a[a.length / 2 - 1]! + a[a.length / 2]!) / 2;
};
const quantile = (v: number[], q: number) => {
  const a = [...v].sort((x, y) => x - y);
  return a[Math.min(a.length - 1, Math.floor(q * a.length))] ?? NaN;
};
const r1 = (x: number) => Math.round(x * 10) / 10;

/** A GET with any headers (Host included); the response's headers and body size. */
function get(url: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; bytes: number }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const q = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes }));
      res.on('error', reject);
    });
    q.on('error', reject);
    q.end();
  });
}

/** Watch the page: the file input's change events and each change of the busy line and the mode line, timestamped in the page. */
async function instrument(page: Page) {
  await page.evaluate(() => {
    const log: [string, string | null, number][] = [];
    (window as unknown as { __bench: typeof log }).__bench = log;
    document.querySelector('[data-testid=file]')!.addEventListener('change', () => log.push(['change', null, performance.now()]), { capture: true });
    document.querySelector('[data-testid=private]')!.addEventListener('change', () => log.push(['toggle', null, performance.now()]), { capture: true });
    const last: Record<string, string | null> = { busy: null, mode: null };
    new MutationObserver(() => {
      const t = performance.now();
      for (const id of ['busy', 'mode']) {
        const text = document.querySelector(`[data-testid=${id}]`)?.textContent ?? null;
        if (text !== last[id]) {
          last[id] = text;
          log.push([id, text, t]);
        }
      }
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
}
const takeLog = (page: Page) => page.evaluate(() => (window as unknown as { __bench: [string, string | null, number][] }).__bench.splice(0));

/** Counts shown in the batch list ("name RBC / WBC / PLT"), per file name. */
async function listedCounts(page: Page): Promise<[string, PerClass<number>][]> {
  const rows = await page.getByTestId('batch').locator('li').allInnerTexts();
  const out: [string, PerClass<number>][] = [];
  for (const row of rows) {
    const m = /^(.*\S)\s+(\d+) \/ (\d+) \/ (\d+)$/.exec(row.trim());
    if (m) out.push([original(m[1]!), { RBC: Number(m[2]), WBC: Number(m[3]), Platelets: Number(m[4]) }]);
  }
  return out;
}

/** Select files, wait until the app lists them all: each image's time, from the page's own timestamps. */
async function count(page: Page, files: string[], listedBefore: number) {
  await page.getByTestId('file').setInputFiles(files);
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid=batch] li').length >= n && !document.querySelector('[data-testid=busy]'),
    listedBefore + files.length,
    { timeout: 300_000 },
  );
  const log = await takeLog(page);
  const change = log.find((e) => e[0] === 'change')?.[2];
  if (change === undefined) throw new Error('no change event seen');
  // image k ends when the busy line moves on to image k + 1, the last one when the busy line goes
  const ends = log.filter((e) => e[0] === 'busy' && e[2] >= change && !/ 1\/\d+:/.test(e[1] ?? '')).map((e) => e[2]);
  const times = ends.map((t, k) => t - (k ? ends[k - 1]! : change));
  if (times.length !== files.length) throw new Error(`expected ${files.length} image ends, saw ${times.length}: ${JSON.stringify(log)}`);
  // a single image: until the page shows its counts
  const shown = log.find((e) => e[0] === 'mode' && e[1] === 'counted in this browser (private)' && e[2] >= change)?.[2];
  if (files.length === 1 && shown !== undefined) times[0] = Math.max(times[0]!, shown - change);
  // from switching private mode on, where that was in this log (a busy page can hold the next event back)
  const toggle = log.find((e) => e[0] === 'toggle')?.[2];
  return { times, fromToggle: toggle === undefined ? undefined : change + times.reduce((a, b) => a + b, 0) - toggle };
}

async function openPrivate(context: BrowserContext, url: string) {
  const page = await context.newPage();
  await page.goto(url);
  await page.getByTestId('file').waitFor({ state: 'attached' });
  await instrument(page);
  await page.getByTestId('private').check();
  if (think > 0) await page.waitForTimeout(think);
  return page;
}

/** What the page fetched for private mode (resource timing): 0 bytes on the wire = from the cache, ~300 = a 304. */
const transfers = (page: Page) =>
  page.evaluate(() =>
    (performance.getEntriesByType('resource') as PerformanceResourceTiming[])
      .filter((e) => /\/ort\/|\/api\/model\.onnx|\/api\/models\//.test(e.name))
      .map((e) => ({
        url: new URL(e.name).pathname,
        status: (e as PerformanceResourceTiming & { responseStatus?: number }).responseStatus ?? null,
        onTheWire: e.transferSize,
        body: e.encodedBodySize,
        decoded: e.decodedBodySize,
        ms: Math.round(e.responseEnd - e.startTime),
      })),
  );

const measures = (page: Page) =>
  page.evaluate(() =>
    performance
      .getEntriesByType('measure')
      .filter((m) => m.name.startsWith('hemocount:'))
      .map((m) => ({ name: m.name.slice('hemocount:'.length), ms: Math.round(m.duration) })),
  );

type Transfers = Awaited<ReturnType<typeof transfers>>;
interface RunResult {
  variant: Variant;
  round: number;
  firstImageMs: number;
  firstImageFromToggleMs: number;
  perImageMs: { image: string; ms: number }[];
  revisitFirstImageMs: number;
  transfers: Transfers;
  revisitTransfers: Transfers;
  /** The app's own measures on the first page: load (model-download, session), then detect per image. */
  measures: { name: string; ms: number }[];
  /** Every counted picture, under its sample's name. */
  counts: [string, PerClass<number>][];
  crossOriginIsolated: boolean;
}

async function run(browser: Browser, url: string, variant: Variant, round: number): Promise<RunResult> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const page = await openPrivate(context, url);
    const crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
    const f = await count(page, [first], 0);
    const perImageMs: { image: string; ms: number }[] = [];
    let listed = 1;
    for (let p = 0; p < passes; p++) {
      const { times } = await count(page, copiesFor(p), listed);
      listed += samples.length;
      perImageMs.push(...times.map((ms, k) => ({ image: basename(samples[k]!), ms: r1(ms) })));
    }
    const result = { counts: await listedCounts(page), measures: await measures(page), transfers: await transfers(page) };
    await page.close();
    // the same browser profile again: what the HTTP cache saves (the saved work comes back too: count on top of it)
    const again = await openPrivate(context, url);
    const rv = await count(again, [copyAs(first, passes)], await again.locator('[data-testid=batch] li').count());
    const revisitTransfers = await transfers(again);
    await again.close();
    return {
      variant,
      round,
      firstImageMs: r1(f.times[0]!),
      firstImageFromToggleMs: r1(f.fromToggle ?? NaN),
      perImageMs,
      revisitFirstImageMs: r1(rv.times[0]!),
      ...result,
      revisitTransfers,
      crossOriginIsolated,
    };
  } finally {
    await context.close();
  }
}

const model = await loadModel('fp32'); // the variants choose what the browser runs
const ORT = ORT_FILES.map((f) => `/ort/${f}`);
interface Served {
  url: string;
  close: () => Promise<unknown>;
  browser: { model: string; precision: string } | null;
  assets: Record<string, { cacheControl: unknown; etag: unknown; bytes: Record<string, number> }>;
}
const servers = {} as Record<Variant, Served>;
for (const v of variants) {
  const { precision, host } = VARIANTS[v];
  const app = await buildServer({ model, browserPrecision: precision, allowHosts: ['hemocount.localhost'] });
  const local = await app.listen({ port: 0, host: '127.0.0.1' });
  const url = local.replace('127.0.0.1', host);
  const info = JSON.parse(await (await fetch(`${local}/api/model`)).text()) as { browser?: { model: string; precision: string } };
  // each asset as a client on this host name gets it, per Accept-Encoding; a server that has run a
  // while: the compressed forms it makes once, on first need, are made before measuring
  const assets: Served['assets'] = {};
  for (const path of [...ORT, info.browser?.model ?? '/api/model.onnx']) {
    const bytes: Record<string, number> = {};
    let head: Awaited<ReturnType<typeof get>>['headers'] = {};
    // (none to a loopback host name: see encodingFor in src/server/app.ts)
    for (const enc of host === '127.0.0.1' ? ['identity'] : ['identity', 'gzip', 'br']) {
      for (let k = 0; k < 50; k++) {
        const res = await get(`${local}${path}`, { host: new URL(url).host, 'accept-encoding': enc });
        head = res.headers;
        const got = (res.headers['content-encoding'] as string | undefined) ?? 'identity';
        bytes[got] = res.bytes;
        if (got === enc || !/accept-encoding/i.test(String(res.headers.vary ?? ''))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assets[path] = { cacheControl: head['cache-control'], etag: head.etag, bytes };
  }
  servers[v] = { url, close: () => app.close(), browser: info.browser ?? null, assets };
}
const browser = await launchChromium();
const chromiumVersion = browser.version();
const load0 = loadavg();
const results: RunResult[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    // interleaved, the order flipped every round
    const order = round % 2 ? [...variants].reverse() : variants;
    for (const v of order) {
      const r = await run(browser, servers[v].url, v, round);
      const per = r.perImageMs.filter((x) => is640x480(x.image)).map((x) => x.ms);
      console.error(
        `round ${round} ${v}: first image ${r.firstImageMs} ms, per 640x480 image p50 ${r1(median(per))} ms, revisit first ${r.revisitFirstImageMs} ms`,
      );
      results.push(r);
    }
  }
} finally {
  await browser.close().catch(() => {});
  for (const s of Object.values(servers)) await s.close();
}
const load1 = loadavg();

// the server's counts (onnxruntime-node, fp32) on the same samples
const server: Record<string, PerClass<number>> = {};
for (const s of samples) server[basename(s)] = (await model.count(s)).counts;

function summarise(v: Variant) {
  const rs = results.filter((r) => r.variant === v);
  const per = rs.flatMap((r) => r.perImageMs.filter((x) => is640x480(x.image)).map((x) => x.ms));
  // the app's detect measure of each of those images (after the first image's): the rest of the time is the page's
  const detects = rs.flatMap((r) => {
    const d = r.measures.filter((m) => m.name === 'detect').slice(1);
    return r.perImageMs.flatMap((x, k) => (is640x480(x.image) && d[k] ? [d[k].ms] : []));
  });
  const all = rs.flatMap((r) => r.perImageMs.map((x) => x.ms));
  const disagreements = rs.flatMap((r) =>
    Object.entries(server).flatMap(([name, c]) => {
      const seen = r.counts.filter(([n]) => n === name).map(([, b]) => b);
      const wrong = seen.length ? seen.filter((b) => CLASSES.some((k) => b[k] !== c[k])) : [null];
      return wrong.map((b) => ({ round: r.round, image: name, browser: b, server: c }));
    }),
  );
  const measure = (name: string) => r1(median(rs.map((r) => r.measures.find((m) => m.name === name)?.ms ?? NaN)));
  return {
    model: servers[v].browser,
    firstImageMs: { median: r1(median(rs.map((r) => r.firstImageMs))), runs: rs.map((r) => r.firstImageMs) },
    firstImageFromToggleMs: { median: r1(median(rs.map((r) => r.firstImageFromToggleMs))), runs: rs.map((r) => r.firstImageFromToggleMs) },
    // the first image's parts, medians: the model download (from the start of the load), the session (wasm runtime included), the network's first pass
    firstImageParts: { load: measure('load'), modelDownload: measure('model-download'), session: measure('session'), firstDetect: measure('detect') },
    perImage640x480Ms: { p50: r1(median(per)), p90: r1(quantile(per, 0.9)), min: r1(Math.min(...per)), n: per.length },
    perImageAllSamplesMs: { p50: r1(median(all)), p90: r1(quantile(all, 0.9)), n: all.length },
    perImage640x480DetectMs: { p50: r1(median(detects)), p90: r1(quantile(detects, 0.9)), n: detects.length },
    revisitFirstImageMs: { median: r1(median(rs.map((r) => r.revisitFirstImageMs))), runs: rs.map((r) => r.revisitFirstImageMs) },
    countsAgreeWithServer: disagreements.length === 0,
    disagreements,
    transfers: rs[0]?.transfers,
    revisitTransfers: rs[0]?.revisitTransfers,
    crossOriginIsolated: rs.every((r) => r.crossOriginIsolated),
  };
}
const summary: Partial<Record<Variant, ReturnType<typeof summarise>>> = Object.fromEntries(variants.map((v) => [v, summarise(v)]));
const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
const doc = {
  machine: machine(),
  chromium: chromiumVersion,
  loadavg: { start: load0.map(r1), end: load1.map(r1) },
  note: "Loopback, headless Chromium (--disable-gpu), a fresh browser context per run (empty HTTP cache). Times are taken inside the page: from the file input's change event to the page showing the counts (first image) or moving on to the next image. The machine was shared with other work (see loadavg) and times vary by hundreds of ms from run to run: compare the variants through their ratios in this run.",
  samples: sizes,
  passes,
  rounds,
  thinkMs: think,
  results: summary,
  ratios: {
    ...(summary.fp32 && summary.int8
      ? {
          int8VsFp32: {
            firstImage: ratio(summary.int8.firstImageMs.median, summary.fp32.firstImageMs.median),
            perImage640x480: ratio(summary.int8.perImage640x480Ms.p50, summary.fp32.perImage640x480Ms.p50),
          },
        }
      : {}),
    ...(summary.fp32 && summary['fp32-compressed']
      ? {
          compressedVsNot: {
            firstImage: ratio(summary['fp32-compressed'].firstImageMs.median, summary.fp32.firstImageMs.median),
          },
        }
      : {}),
  },
  assets: Object.fromEntries(Object.entries(servers).map(([v, s]) => [v, s.assets])),
  serverCounts: server,
  runs: results,
};
console.log(JSON.stringify(doc, null, 1));
if (outFile) writeFileSync(outFile, `${JSON.stringify(doc, null, 1)}\n`);

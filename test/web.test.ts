/** The web app in a real browser (Debian's Chromium driven by playwright-core) against a real server. */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { type IncomingHttpHeaders, request } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { parseVoc, toVoc } from '../src/core/formats.js';
import type { ModelMetadata } from '../src/core/types.js';
import { loadModel, type Model } from '../src/index.js';
import { buildServer } from '../src/server/app.js';
import { launchChromium, MODEL, SAMPLES, tmp } from './helpers.js';

let browser: Browser;
let page: Page;
let url = '';
let model: Model;
let close: () => Promise<void>;
const SAMPLE = join(SAMPLES, 'BloodImage_00004.jpg');

before(async () => {
  model = await loadModel(MODEL);
  // a low pixel limit, so that a small picture can show that private mode keeps the server's
  const app = await buildServer({ model, maxPixels: 2_000_000 });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
  close = () => app.close();
  browser = await launchChromium();
  page = await (await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true })).newPage();
  await page.goto(url);
});
after(async () => {
  await browser?.close();
  await close?.();
});

const num = async (id: string) => Number(await page.getByTestId(id).innerText());
const counts = async (kind: 'detected' | 'corrected') => ({
  RBC: await num(`${kind}-RBC`),
  WBC: await num(`${kind}-WBC`),
  Platelets: await num(`${kind}-Platelets`),
});

test('upload a sample: the app shows the same counts as hemocount count', async () => {
  await page.getByTestId('file').setInputFiles(SAMPLE);
  await page.getByTestId('counts').waitFor();
  const cli = await model.count(SAMPLE);
  assert.deepEqual(await counts('detected'), cli.counts);
  assert.deepEqual(await counts('corrected'), cli.counts);
  assert.equal(await num('uncertain-RBC'), cli.uncertain.RBC);
  assert.match(await page.getByTestId('mode').innerText(), /on the server/);
});

test('moving a threshold slider changes the count without a new request', async () => {
  let requests = 0;
  page.on('request', (r) => {
    if (r.url().includes('/api/count')) requests++;
  });
  const before = await num('detected-RBC');
  await page.getByTestId('th-RBC').evaluate((el: HTMLInputElement) => {
    el.value = '0.9';
    el.dispatchEvent(new Event('input', { bubbles: true }));
  });
  const afterHigh = await num('detected-RBC');
  assert.ok(afterHigh < before, `${afterHigh} < ${before}`);
  const cli = await model.count(SAMPLE, { thresholds: { RBC: 0.9 } });
  assert.equal(afterHigh, cli.counts.RBC);
  await page.getByTestId('th-RBC').evaluate((el: HTMLInputElement, v) => {
    el.value = String(v);
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, model.metadata.thresholds.RBC);
  assert.equal(await num('detected-RBC'), before);
  assert.equal(requests, 0);
});

test('review mode: deleting a box lowers the corrected count, not the detected one', async () => {
  await page.getByTestId('review-mode').check();
  const cli = await model.count(SAMPLE);
  const wbc = cli.detections.filter((d) => !d.uncertain).sort((a, b) => b.score - a.score)[0];
  assert.ok(wbc);
  const box = await page.getByTestId('canvas').boundingBox();
  const v = JSON.parse((await page.getByTestId('canvas').getAttribute('data-view'))!) as { scale: number; ox: number; oy: number };
  // the centre of the most confident detection
  const ix = (wbc.box[0] + wbc.box[2]) / 2;
  const iy = (wbc.box[1] + wbc.box[3]) / 2;
  await page.mouse.click(box!.x + v.ox + ix * v.scale, box!.y + v.oy + iy * v.scale);
  const sel = await page.getByTestId('selected').innerText();
  const label = (['RBC', 'WBC', 'Platelets'] as const).find((c) => sel.startsWith(c))!;
  const before = await counts('corrected');
  await page.getByTestId('delete').click();
  const after = await counts('corrected');
  assert.equal(after[label], before[label] - 1);
  assert.deepEqual(await counts('detected'), cli.counts);
});

test('VOC export holds the corrected boxes and re-reads', async () => {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-voc').click()]);
  const file = join(tmp(), 'export.xml');
  await dl.saveAs(file);
  const voc = parseVoc(readFileSync(file, 'utf8'));
  const c = await counts('corrected');
  assert.equal(voc.boxes.length, c.RBC + c.WBC + c.Platelets);
  assert.equal(voc.filename, 'BloodImage_00004.jpg');
  assert.equal(voc.width, 640);
});

test('work survives a page reload', async () => {
  const c = await counts('corrected');
  await page.waitForTimeout(300); // the save is asynchronous
  await page.reload();
  await page.getByTestId('counts').waitFor();
  assert.deepEqual(await counts('corrected'), c);
});

test('the batch is a sample: totals with intervals, a reviewer stamp, and a report that shows the corrected counts', async () => {
  await page.getByTestId('file').setInputFiles(join(SAMPLES, 'BloodImage_00011.jpg'));
  await page.getByTestId('sample-summary').waitFor();
  await page.getByTestId('sample-name').fill('P-1');
  await page.getByTestId('reviewer').fill('Dr Test');
  await page.getByTestId('mark-reviewed').click();
  const summary = await page.getByTestId('sample-summary').innerText();
  const rbc = await num('total-RBC');
  assert.match(summary, new RegExp(`RBC total \\(95 % CI\\)\\s+${rbc} \\(\\d+-\\d+\\)`));
  // one field was marked reviewed; the other was corrected (the deletion above) but still holds
  // undecided cells, so it is still to review
  assert.match(await page.getByTestId('review-status').innerText(), /^1 \/ 1$/);
  await page.getByTestId('rbc-count').fill('4.8e6');
  // one field: too few red cells for an estimate per microlitre, and the summary says so
  assert.match(await page.getByTestId('sample-summary').innerText(), /Platelets, ESTIMATE \(95 % CI\)\s+not given: \d+ red cells counted/);
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-report').click()]);
  const file = join(tmp(), 'report.html');
  await dl.saveAs(file);
  const html = readFileSync(file, 'utf8');
  assert.match(html, /Sample P-1/);
  assert.match(html, /Reviewed by: .*Dr Test/);
  assert.match(html, new RegExp(`RBC total \\(95 % CI\\)</th><td>${rbc} `));
  assert.equal((html.match(/<img src="data:image\/jpeg;base64,/g) ?? []).length, 2);
});

test('a batch with bad files: the good images are counted, each bad file is named', async () => {
  const dir = tmp();
  const good = join(SAMPLES, '069e00b1-4852-5629-b1a7-b115562d6bd7.jpg');
  writeFileSync(join(dir, 'notimage.jpg'), 'this is text, not a picture');
  writeFileSync(join(dir, 'cut.jpg'), readFileSync(SAMPLE).subarray(0, 9000));
  const before = await page.getByTestId('batch').locator('li').count();
  await page.getByTestId('file').setInputFiles([join(dir, 'notimage.jpg'), good, join(dir, 'cut.jpg')]);
  await page.getByTestId('errors').waitFor();
  const errors = await page.getByTestId('errors').innerText();
  assert.match(errors, /notimage\.jpg: not an image/);
  assert.match(errors, /cut\.jpg: corrupt or truncated/);
  assert.equal(await page.getByTestId('batch').locator('li').count(), before + 1);
  const cli = await model.count(good);
  assert.deepEqual(await counts('detected'), cli.counts);
  // the same picture again is not a second field (its cells would count twice)
  await page.getByTestId('file').setInputFiles(good);
  await page.getByText('already in this sample, not added again').waitFor();
  assert.equal(await page.getByTestId('batch').locator('li').count(), before + 1);
});

test('private mode counts in the browser and agrees with server mode', { timeout: 120_000 }, async () => {
  await page.getByTestId('private').check();
  await page.getByTestId('file').setInputFiles(join(SAMPLES, 'BloodImage_00017.jpg'));
  await page.getByText('counted in this browser (private)').waitFor({ timeout: 90_000 });
  const cli = await model.count(join(SAMPLES, 'BloodImage_00017.jpg'));
  assert.deepEqual(await counts('detected'), cli.counts);
  assert.ok(await page.evaluate(() => self.crossOriginIsolated), 'COOP/COEP make threaded WASM possible');
  // the model the server offers private mode, by its content-addressed URL
  const fetched = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname));
  assert.ok(fetched.includes(`/api/models/${model.info.sha256}.onnx`), fetched.join(' '));
  // a private session stays private after a reload, and the header says where the next images go
  await page.waitForTimeout(300); // the save is asynchronous
  await page.reload();
  await page.getByTestId('counts').waitFor();
  assert.ok(await page.getByTestId('private').isChecked());
  assert.match(await page.getByTestId('mode').innerText(), /next images: in this browser/);
  // the server's pixel limit holds in the browser too
  const big = join(tmp(), 'big.png');
  await sharp({ create: { width: 1600, height: 1600, channels: 3, background: '#e0c0c0' } })
    .png()
    .toFile(big);
  await page.getByTestId('file').setInputFiles(big);
  await page.getByTestId('errors').waitFor();
  assert.match(await page.getByTestId('errors').innerText(), /big\.png: 1600x1600 is 2\.6 megapixels; the limit is 2, as on the server/);
});

test('private mode with the int8 model (its input the 8-bit image) counts as the int8 model on the server does', { timeout: 120_000 }, async () => {
  const app = await buildServer({ model, browserPrecision: 'int8' });
  const other = await app.listen({ port: 0, host: '127.0.0.1' });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const info = (await (await fetch(`${other}/api/model`)).json()) as {
      metadata: ModelMetadata;
      browser: { precision: string; input: ModelMetadata['input'] };
    };
    // the server's decoding, the int8 model's input
    assert.equal(info.browser.precision, 'int8');
    assert.deepEqual([info.metadata.input.layout, info.browser.input.layout, info.browser.input.dtype], ['NCHW', 'NHWC', 'uint8']);
    const p = await context.newPage();
    await p.goto(other);
    await p.getByTestId('private').check();
    await p.getByTestId('file').setInputFiles(SAMPLE);
    await p.getByText('counted in this browser (private)').waitFor({ timeout: 90_000 });
    const int8 = await (await loadModel('int8')).count(SAMPLE);
    const shown = {
      RBC: Number(await p.getByTestId('detected-RBC').innerText()),
      WBC: Number(await p.getByTestId('detected-WBC').innerText()),
      Platelets: Number(await p.getByTestId('detected-Platelets').innerText()),
    };
    assert.deepEqual(shown, int8.counts);
  } finally {
    await context.close();
    await app.close();
  }
});

test('the white balance switch: a field under a warm lamp counts as the library counts it white-balanced', { timeout: 120_000 }, async () => {
  // the lamp's colour, not white-balanced: red up 8 %, blue down 20 % (lossless, so the server sees these pixels)
  const { data, info } = await sharp(join(SAMPLES, 'BloodImage_00011.jpg')).raw().toBuffer({ resolveWithObject: true });
  for (let i = 0; i < data.length; i += 3) {
    data[i] = Math.min(255, Math.round(data[i]! * 1.08));
    data[i + 2] = Math.round(data[i + 2]! * 0.8);
  }
  const warm = join(tmp(), 'warm.png');
  await sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } })
    .png()
    .toFile(warm);
  const [on, off] = [await model.count(warm, { whiteBalance: true }), await model.count(warm)];
  assert.notDeepEqual(on.counts, off.counts, "the lamp changes this field's counts");
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const p = await context.newPage();
    await p.goto(url);
    assert.equal(await p.getByTestId('white-balance').isChecked(), false); // the bundled model's default
    await p.getByTestId('white-balance').check();
    await p.getByTestId('file').setInputFiles(warm);
    await p.getByTestId('counts').waitFor();
    const shown = async (id: string) => Number(await p.getByTestId(id).innerText());
    assert.deepEqual({ RBC: await shown('detected-RBC'), WBC: await shown('detected-WBC'), Platelets: await shown('detected-Platelets') }, on.counts);
  } finally {
    await context.close();
  }
});

/** A GET with any headers (Host included): status, headers, body. */
function get(base: string, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
    const u = new URL(base);
    const q = request({ host: u.hostname, port: u.port, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    q.on('error', reject);
    q.end();
  });
}

test('private mode downloads: the model cached for good, onnxruntime revalidated by ETag, compressed for browsers elsewhere', async () => {
  const info = (await (await fetch(`${url}/api/model`)).json()) as { browser: { model: string; precision: string; input: ModelMetadata['input'] } };
  // private mode runs the server's own model (here the bundled fp32 one; int8 counts a sample differently, docs/browser.json)
  assert.deepEqual(info.browser, { model: `/api/models/${model.info.sha256}.onnx`, precision: 'server', input: model.metadata.input });
  const onnx = readFileSync(MODEL);
  const m = await get(url, info.browser.model);
  assert.equal(m.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.ok(m.body.equals(onnx));
  // the app's scripts are named by their content: cached for good too; the page that names them is not
  const page = await get(url, '/');
  const script = /src="(\/assets\/[^"]+\.js)"/.exec(page.body.toString())?.[1];
  assert.ok(script, 'the page loads a hashed script');
  assert.equal((await get(url, script)).headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.notEqual(page.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.equal((await get(url, info.browser.model, { 'if-none-match': String(m.headers.etag) })).status, 304);
  assert.equal((await get(url, `/api/models/${'0'.repeat(64)}.onnx`)).status, 404);
  const int8 = await get(url, '/api/model.onnx?precision=int8');
  assert.ok(int8.body.equals(readFileSync(MODEL.replace(/\.onnx$/, '.int8.onnx'))));
  // onnxruntime-web: revalidated (304) by a strong ETag; sent as it is to a browser on this machine
  const wasmFile = readFileSync(join(dirname(createRequire(import.meta.url).resolve('onnxruntime-web')), 'ort-wasm-simd-threaded.wasm'));
  const wasm = await get(url, '/ort/ort-wasm-simd-threaded.wasm', { 'accept-encoding': 'gzip, br' });
  assert.equal(wasm.headers['cache-control'], 'no-cache');
  assert.equal(wasm.headers['content-type'], 'application/wasm');
  assert.equal(wasm.headers['content-encoding'], undefined);
  assert.ok(wasm.body.equals(wasmFile));
  assert.match(String(wasm.headers.etag), /^"[0-9a-f]{32}"$/);
  assert.equal((await get(url, '/ort/ort-wasm-simd-threaded.wasm', { 'if-none-match': String(wasm.headers.etag) })).status, 304);
  // by another host name: compressed, once, in the background (the bytes go as they are meanwhile)
  const app = await buildServer({ model, allowHosts: ['hemocount.test'] });
  const other = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    for (const [enc, decode] of [
      ['br', brotliDecompressSync],
      ['gzip', gunzipSync],
    ] as const) {
      let r = await get(other, '/ort/ort-wasm-simd-threaded.wasm', { host: 'hemocount.test', 'accept-encoding': enc });
      for (let k = 0; k < 100 && r.headers['content-encoding'] !== enc; k++) {
        await new Promise((res) => setTimeout(res, 100));
        r = await get(other, '/ort/ort-wasm-simd-threaded.wasm', { host: 'hemocount.test', 'accept-encoding': enc });
      }
      assert.equal(r.headers['content-encoding'], enc);
      assert.ok(r.body.length < wasmFile.length / 3, `${enc}: ${r.body.length} bytes`);
      assert.ok(decode(r.body).equals(wasmFile));
      assert.equal(r.headers.vary, 'Accept-Encoding');
      // any form the browser holds is still good
      const again = await get(other, '/ort/ort-wasm-simd-threaded.wasm', { host: 'hemocount.test', 'if-none-match': String(r.headers.etag) });
      assert.equal(again.status, 304);
      assert.match(String(again.headers['content-security-policy']), /script-src 'self' 'wasm-unsafe-eval'/);
    }
  } finally {
    await app.close();
  }
});

test('an image added with a VOC file of its name opens with those labels to review; the export keeps the undecided ones difficult', async () => {
  const dir = tmp();
  const img = join(dir, 'BloodImage_00011.jpg');
  copyFileSync(join(SAMPLES, 'BloodImage_00011.jpg'), img);
  const undecided = { label: 'RBC' as const, box: [200, 20, 300, 120] as [number, number, number, number], uncertain: true };
  const labels = [
    { label: 'RBC' as const, box: [10, 10, 110, 110] as [number, number, number, number] },
    undecided,
    { label: 'Platelets' as const, box: [400, 300, 430, 330] as [number, number, number, number], uncertain: true },
  ];
  writeFileSync(join(dir, 'BloodImage_00011.xml'), toVoc('BloodImage_00011.jpg', 640, 480, labels));
  writeFileSync(join(dir, 'stray.xml'), toVoc('stray.jpg', 640, 480, []));
  // a label file written for a resized copy is not used: its image is counted by the model instead
  const other = join(dir, '0aa766fb-87f4-5dba-86e7-299250bc2e25.jpg');
  copyFileSync(join(SAMPLES, '0aa766fb-87f4-5dba-86e7-299250bc2e25.jpg'), other);
  writeFileSync(join(dir, '0aa766fb-87f4-5dba-86e7-299250bc2e25.xml'), toVoc('0aa766fb-87f4-5dba-86e7-299250bc2e25.jpg', 320, 240, labels));
  const itemsBefore = await page.getByTestId('batch').locator('li').count();
  let requests = 0;
  const onRequest = (r: { url(): string }) => {
    if (r.url().includes('/api/count')) requests++;
  };
  page.on('request', onRequest);
  await page
    .getByTestId('file')
    .setInputFiles([img, join(dir, 'BloodImage_00011.xml'), join(dir, 'stray.xml'), other, join(dir, '0aa766fb-87f4-5dba-86e7-299250bc2e25.xml')]);
  await page.getByText('labels from BloodImage_00011.xml').waitFor({ timeout: 90_000 });
  // a label file's boxes are not passed off as the model's: no probabilities, and the sliders are said not to apply
  const table = await page.getByTestId('counts').innerText();
  assert.match(table, /labelled/);
  assert.doesNotMatch(table, /detected|1\.000/);
  await page.getByText('the threshold sliders do not move them').waitFor();
  assert.equal(await page.getByTestId('batch').locator('li').count(), itemsBefore + 2);
  assert.match(
    await page.getByTestId('errors').innerText(),
    /0aa766fb-87f4-5dba-86e7-299250bc2e25\.xml: it describes a 320x240 image, 0aa766fb-87f4-5dba-86e7-299250bc2e25\.jpg is 575x575: not used; 0aa766fb-87f4-5dba-86e7-299250bc2e25\.jpg counted by the model/,
  );
  page.off('request', onRequest);
  assert.equal(requests, 0, 'a labelled image is not sent to the model');
  assert.match(await page.getByTestId('errors').innerText(), /stray\.xml: no image named stray\.\* among the files added/);
  assert.deepEqual(await counts('detected'), { RBC: 1, WBC: 0, Platelets: 0 });
  assert.equal(await num('uncertain-RBC'), 1);
  // the model's threshold sliders leave a file's labels alone
  await page.getByTestId('th-RBC').evaluate((el: HTMLInputElement) => {
    el.value = '0.9';
    el.dispatchEvent(new Event('input', { bubbles: true }));
  });
  assert.equal(await num('detected-RBC'), 1);
  // a reviewer accepts the undecided red cell
  await page.getByTestId('review-mode').check();
  const box = await page.getByTestId('canvas').boundingBox();
  const v = JSON.parse((await page.getByTestId('canvas').getAttribute('data-view'))!) as { scale: number; ox: number; oy: number };
  await page.mouse.click(box!.x + v.ox + 250 * v.scale, box!.y + v.oy + 70 * v.scale);
  await page.getByTestId('accept').click();
  assert.equal(await num('corrected-RBC'), 2);
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-voc').click()]);
  const file = join(dir, 'export.xml');
  await dl.saveAs(file);
  const voc = parseVoc(readFileSync(file, 'utf8'));
  assert.deepEqual(
    voc.boxes.map((b) => [b.label, b.box]),
    [
      ['RBC', [10, 10, 110, 110]],
      ['RBC', [200, 20, 300, 120]],
    ],
  );
  assert.deepEqual(voc.undecided, [{ label: 'Platelets', box: [400, 300, 430, 330] }]);
  await page.getByTestId('th-RBC').evaluate((el: HTMLInputElement, t) => {
    el.value = String(t);
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, model.metadata.thresholds.RBC);
});

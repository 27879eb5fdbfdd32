/** The HTTP API on a real server on localhost: counts, limits, and a burst of requests. */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { defaultModelPath, loadModel } from '../src/index.js';
import { CLI, MODEL, pngHeaderOnly, SAMPLES } from './helpers.js';

let server: ChildProcess;
let base = '';

before(async () => {
  server = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--max-file-mb', '15', '--max-files', '5', '--max-queued', '4'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  base = await new Promise<string>((res, rej) => {
    let err = '';
    server.stderr!.on('data', (d) => {
      err += d;
      const [, url] = /serving .* at (http:\/\/[\d.:]+)/.exec(err) ?? [];
      if (url) res(url);
    });
    server.on('exit', (code) => rej(new Error(`server exited ${code}: ${err}`)));
  });
});
after(() => server.kill());

const sample = readFileSync(join(SAMPLES, 'BloodImage_00011.jpg'));
function form(files: { name: string; bytes: Uint8Array; type?: string }[], fields: Record<string, string> = {}) {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) f.append(k, v);
  for (const x of files) f.append('images', new Blob([x.bytes as Uint8Array<ArrayBuffer>], { type: x.type ?? 'image/jpeg' }), x.name);
  return f;
}
const post = (f: FormData) => fetch(`${base}/api/count`, { method: 'POST', body: f });
async function stillAlive() {
  const r = await fetch(`${base}/healthz`);
  assert.equal(r.status, 200);
  return r.json();
}

test('POST /api/count returns the CLI document plus candidates; same counts as the library', async () => {
  const r = await post(form([{ name: 'a.jpg', bytes: sample }], { thresholds: 'RBC=0.3' }));
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('cross-origin-embedder-policy'), 'require-corp');
  const doc = await r.json();
  const model = await loadModel(); // the server's default model, the bundled int8 one
  const lib = await model.count(join(SAMPLES, 'BloodImage_00011.jpg'), { thresholds: { RBC: 0.3 } });
  assert.deepEqual(doc.images[0].counts, lib.counts);
  assert.equal(doc.thresholds.RBC, 0.3);
  assert.ok(doc.images[0].candidates.length >= doc.images[0].detections.length);
  assert.equal(doc.model.sha256, model.info.sha256);
});

test('model, OpenAPI and health endpoints', async () => {
  const m = await (await fetch(`${base}/api/model`)).json();
  assert.deepEqual(Object.keys(m.metadata.thresholds), ['RBC', 'WBC', 'Platelets']);
  const o = await (await fetch(`${base}/api/openapi.json`)).json();
  assert.ok(o.paths['/api/count'].post.responses['503']);
  // the default server runs the bundled int8 model, and offers it to private mode (also as ?precision=int8)
  const int8 = readFileSync(defaultModelPath('int8'));
  const onnx = await fetch(`${base}/api/model.onnx`);
  assert.ok(Buffer.from(await onnx.arrayBuffer()).equals(int8));
  assert.ok(Buffer.from(await (await fetch(`${base}/api/model.onnx?precision=int8`)).arrayBuffer()).equals(int8));
  assert.deepEqual(m.browser, { model: `/api/models/${m.sha256}.onnx`, precision: 'server', input: m.metadata.input });
  assert.equal(m.browser.input.dtype, 'uint8'); // the int8 model takes the 8-bit image
});

test('a 20 MB upload is refused with 413 JSON', async () => {
  const big = new Uint8Array(20 * 1024 * 1024);
  big.set(sample);
  const r = await post(form([{ name: 'huge.jpg', bytes: big }]));
  assert.equal(r.status, 413);
  const body = await r.json();
  assert.equal(body.error, 'huge.jpg: larger than the 15 MB limit');
  assert.equal(body.file, 'huge.jpg');
  await stillAlive();
});

test('a 30000x30000 PNG is refused by its pixel count before decoding', async () => {
  const png = pngHeaderOnly(30000, 30000);
  const r = await post(form([{ name: 'wide.png', bytes: png, type: 'image/png' }]));
  assert.equal(r.status, 413);
  const body = await r.json();
  assert.match(body.error, /wide\.png: 30000x30000 is 900 megapixels/);
  assert.equal(body.file, 'wide.png');
  await stillAlive();
});

test('a text file named .jpg is refused by its bytes (415)', async () => {
  const r = await post(form([{ name: 'notes.jpg', bytes: new TextEncoder().encode('just some text\n') }]));
  assert.equal(r.status, 415);
  assert.match((await r.json()).error, /notes\.jpg: not an image/);
  await stillAlive();
});

test('other limits: too many files, bad thresholds, no image, not multipart', async () => {
  const six = Array.from({ length: 6 }, (_, i) => ({ name: `${i}.jpg`, bytes: sample }));
  // read to the end and then refused: the answer arrives (no reset while the client still sends)
  const tooMany = await post(form(six));
  assert.equal(tooMany.status, 413);
  assert.match((await tooMany.json()).error, /^too many files: at most 5 per request/);
  const bad = await post(form([{ name: 'a.jpg', bytes: sample }], { thresholds: 'RBC=3' }));
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /between 0 and 1/);
  assert.equal((await post(form([], { thresholds: '0.3' }))).status, 400);
  const tta = await post(form([{ name: 'a.jpg', bytes: sample }], { tta: 'yes' }));
  assert.equal(tta.status, 400);
  assert.match((await tta.json()).error, /tta must be true or false, not 'yes'/);
  const wb = await post(form([{ name: 'a.jpg', bytes: sample }], { white_balance: 'warm' }));
  assert.equal(wb.status, 400);
  assert.match((await wb.json()).error, /white_balance must be true or false, not 'warm'/);
  const json = await fetch(`${base}/api/count`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(json.status, 415);
  // a misspelt option or a file in another field is refused, not ignored; an empty file is called empty
  const unknown = await post(form([{ name: 'a.jpg', bytes: sample }], { model: 'fp32' }));
  assert.equal(unknown.status, 400);
  assert.match((await unknown.json()).error, /^unknown field 'model' \(fields: images, thresholds, review, scale, tta/);
  const f = new FormData();
  f.append('file', new Blob([sample], { type: 'image/jpeg' }), 'x.jpg');
  const field = await post(f);
  assert.equal(field.status, 400);
  assert.deepEqual(await field.json(), { error: 'x.jpg: send images in the field "images", not "file"', status: 400, file: 'x.jpg' });
  // refused once the body is read, so the same connection carries the next request
  const big = new Uint8Array(400_000);
  big.set(sample);
  for (let k = 0; k < 2; k++) {
    const w = new FormData();
    w.append('file', new Blob([big], { type: 'image/jpeg' }), 'w.jpg');
    w.append('images', new Blob([sample], { type: 'image/jpeg' }), 'ok.jpg');
    assert.equal((await post(w)).status, 400);
    assert.equal((await post(form([{ name: 'a.jpg', bytes: sample }], { model: 'x' }))).status, 400);
    assert.equal((await post(form([{ name: 'a.jpg', bytes: sample }]))).status, 200);
  }
  const empty = await post(form([{ name: 'e.jpg', bytes: new Uint8Array(0) }]));
  assert.deepEqual(await empty.json(), { error: 'e.jpg: empty file (0 bytes)', status: 400, file: 'e.jpg' });
  await stillAlive();
});

test('200 concurrent requests are all answered (200 or 503) and memory comes back down', { timeout: 300_000 }, async () => {
  await post(form([{ name: 'warm.jpg', bytes: sample }]));
  const start = (await stillAlive()).rssMB;
  const t0 = Date.now();
  const statuses = await Promise.all(
    Array.from({ length: 200 }, async () => {
      const r = await post(form([{ name: 'a.jpg', bytes: sample }]));
      if (r.status === 503) assert.ok(Number(r.headers.get('retry-after')) > 0);
      await r.arrayBuffer();
      return r.status;
    }),
  );
  assert.ok(Date.now() - t0 < 240_000);
  assert.ok(
    statuses.every((s) => s === 200 || s === 503),
    JSON.stringify(statuses),
  );
  assert.ok(statuses.filter((s) => s === 200).length >= 5);
  assert.ok(
    statuses.some((s) => s === 503),
    'the queue bound was exercised',
  );
  await new Promise((r) => setTimeout(r, 1500));
  const end = (await stillAlive()).rssMB;
  assert.ok(end < start + 200, `rss ${start} MB -> ${end} MB`);
});

test('security: headers, Host allow-list, no cross-site posts, 4xx for malformed bodies, non-multipart refused unread', async () => {
  const r = await fetch(`${base}/api/model`);
  assert.match(r.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(r.headers.get('access-control-allow-origin'), null, 'no CORS');
  const { request } = await import('node:http');
  const raw = (headers: Record<string, string>, body = '', method = 'GET', path = '/api/model') =>
    new Promise<{ status: number; body: string }>((res, rej) => {
      const u = new URL(base);
      const q = request({ host: u.hostname, port: u.port, path, method, headers }, (s) => {
        let b = '';
        s.on('data', (d) => (b += d));
        s.on('end', () => res({ status: s.statusCode!, body: b }));
      });
      q.on('error', rej);
      q.end(body);
    });
  const rebound = await raw({ host: 'evil.example:8080' });
  assert.equal(rebound.status, 421);
  assert.match(rebound.body, /host 'evil\.example' is not served here/);
  assert.equal((await raw({ host: 'localhost' })).status, 200);
  const cross = await fetch(`${base}/api/count`, {
    method: 'POST',
    body: form([{ name: 'a.jpg', bytes: sample }]),
    headers: { origin: 'http://evil.example' },
  });
  assert.equal(cross.status, 403);
  const broken = await raw(
    { host: 'localhost', 'content-type': 'multipart/form-data; boundary=XYZ' },
    '--XYZ\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\nabc',
    'POST',
    '/api/count',
  );
  assert.ok(broken.status >= 400 && broken.status < 500, `malformed multipart: ${broken.status} ${broken.body}`);
  // a big non-multipart body is refused without being parsed: memory stays put
  const before = (await stillAlive()).rssMB;
  const big = await fetch(`${base}/api/count`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: `{"a": "${'x'.repeat(40 << 20)}"}`,
  }).catch(() => null);
  if (big) assert.equal(big.status, 415);
  const afterMb = (await stillAlive()).rssMB;
  assert.ok(afterMb - before < 100, `RSS ${before} -> ${afterMb} MB`);
});

test('beyond loopback the server needs a token', async () => {
  const refused = spawn(process.execPath, [CLI, 'serve', '--host', '0.0.0.0', '--port', '0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, HEMOCOUNT_TOKEN: '' },
  });
  let err = '';
  refused.stderr!.on('data', (d) => (err += d));
  const code = await new Promise((r) => refused.on('exit', r));
  assert.equal(code, 2);
  assert.match(err, /give --token SECRET/);
  const { buildServer } = await import('../src/server/app.js');
  const app = await buildServer({ model: await loadModel(MODEL), token: 's3cret' });
  const addr = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    assert.equal((await fetch(`${addr}/api/model`)).status, 401);
    assert.equal((await fetch(`${addr}/api/model`, { headers: { authorization: 'Bearer s3cret' } })).status, 200);
    const link = await fetch(`${addr}/?token=s3cret`, { redirect: 'manual' });
    assert.equal(link.status, 302);
    const [cookie] = link.headers.get('set-cookie')!.split(';');
    assert.ok(cookie);
    assert.equal((await fetch(`${addr}/api/model`, { headers: { cookie } })).status, 200);
    assert.equal((await fetch(`${addr}/healthz`)).status, 200);
  } finally {
    await app.close();
  }
});

test('concurrent maximum-size uploads are budgeted while streaming: memory stays bounded', { timeout: 120_000 }, async () => {
  const srv = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--max-files', '5', '--max-file-mb', '12', '--max-inflight-mb', '64'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    const addr = await new Promise<string>((res, rej) => {
      let err = '';
      srv.stderr!.on('data', (d) => {
        err += d;
        const [, url] = /serving .* at (http:\/\/[\d.:]+)/.exec(err) ?? [];
        if (url) res(url);
      });
      srv.on('exit', (code) => rej(new Error(`server exited ${code}: ${err}`)));
    });
    const rss = async () => (await (await fetch(`${addr}/healthz`)).json()).rssMB as number;
    const before = await rss();
    const blob = new Uint8Array(11 << 20).fill(7); // 11 MB that is no image
    const reqs = Array.from({ length: 8 }, () => {
      const f = new FormData();
      for (let i = 0; i < 5; i++) f.append('images', new Blob([blob]), `${i}.jpg`);
      return fetch(`${addr}/api/count`, { method: 'POST', body: f })
        .then((r) => r.status)
        .catch(() => 0);
    });
    let peak = before;
    const sampler = setInterval(() => {
      rss()
        .then((v) => {
          peak = Math.max(peak, v);
        })
        .catch(() => {});
    }, 50);
    const statuses = await Promise.all(reqs);
    clearInterval(sampler);
    // 8 x 55 MB arrive; at most 64 MB of them are held at once
    assert.ok(
      statuses.every((s) => s === 415 || s === 503 || s === 0),
      statuses.join(','),
    );
    assert.ok(statuses.includes(503), statuses.join(','));
    assert.ok(peak - before < 350, `RSS ${before} -> peak ${peak} MB`);
  } finally {
    srv.kill();
  }
});

test('a client that leaves stops its count: the server does not go on counting for nobody', { timeout: 120_000 }, async () => {
  const sharp = (await import('sharp')).default;
  // a field of noise that takes several network passes (tiles) at its native scale
  const bytes = await sharp({ create: { width: 4000, height: 4000, channels: 3, background: '#a0a0a0', noise: { type: 'gaussian', mean: 160, sigma: 40 } } })
    .jpeg({ quality: 60 })
    .toBuffer();
  const idle = async () => {
    for (;;) {
      const { queue } = await stillAlive();
      if (queue.running === 0 && queue.waiting === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await idle();
  let t = performance.now();
  const whole = await post(form([{ name: 'noise.jpg', bytes }], { scale: '1' }));
  assert.equal(whole.status, 200);
  const full = performance.now() - t;
  const leave = new AbortController();
  const left = fetch(`${base}/api/count`, { method: 'POST', body: form([{ name: 'noise.jpg', bytes }], { scale: '1' }), signal: leave.signal }).catch((e) => e);
  for (;;) {
    if ((await stillAlive()).queue.running === 1) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  // a second client that leaves while it waits gives its place up at once
  const waiter = new AbortController();
  const waited = fetch(`${base}/api/count`, { method: 'POST', body: form([{ name: 'a.jpg', bytes: sample }]), signal: waiter.signal }).catch((e) => e);
  for (;;) {
    if ((await stillAlive()).queue.waiting === 1) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  waiter.abort();
  await waited;
  for (let k = 0; (await stillAlive()).queue.waiting !== 0; k++) {
    assert.ok(k < 25, 'the waiting count that was left stayed in the queue');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal((await stillAlive()).queue.running, 1, 'the first count was still running');
  leave.abort();
  t = performance.now();
  await left;
  await idle();
  const stopped = performance.now() - t;
  assert.ok(stopped < full / 2, `the count went on for ${Math.round(stopped)} ms after the client left; a whole count takes ${Math.round(full)} ms`);
  // and the server answers the next client as before
  assert.equal((await post(form([{ name: 'a.jpg', bytes: sample }]))).status, 200);
});

/** The committed corpus of bad inputs (test/corpus): each must be refused with its own clear error. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseCoco, parseVoc, parseYolo } from '../src/core/formats.js';
import { CLI, ROOT } from './helpers.js';

const CORPUS = join(ROOT, 'test', 'corpus');
const expected = JSON.parse(readFileSync(join(CORPUS, 'expected.json'), 'utf8'));
const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: ROOT });

test('every file of the corpus has an expected error, and every expectation a file', () => {
  for (const kind of ['images', 'annotations', 'models', 'http']) {
    assert.deepEqual(readdirSync(join(CORPUS, kind)).sort(), Object.keys(expected[kind]).sort(), kind);
  }
});

test('bad images: each reported by name with its reason, the good one counted, exit 1', () => {
  const r = cli(['count', join(CORPUS, 'images'), join(ROOT, 'samples', 'BloodImage_00004.jpg'), '--json', '-', '--quiet']);
  assert.equal(r.status, 1, r.stderr);
  const doc = JSON.parse(r.stdout);
  for (const [name, err] of Object.entries(expected.images as Record<string, string>)) {
    const im = doc.images.find((i: { file: string }) => i.file.endsWith(`/${name}`));
    assert.ok(im, `${name} is in the results`);
    assert.match(im.error ?? '', new RegExp(err), name);
  }
  assert.equal(doc.totals.images, 1);
});

test('bad annotations: refused or their bad boxes dropped, with the file position and the problem', () => {
  for (const [name, err] of Object.entries(expected.annotations as Record<string, string>)) {
    const text = readFileSync(join(CORPUS, 'annotations', name), 'utf8');
    let said: string;
    try {
      const parsed = name.endsWith('.xml') ? parseVoc(text) : name.endsWith('.txt') ? parseYolo(text, 640, 480, ['WBC', 'RBC', 'Platelets']) : parseCoco(text);
      said = parsed.problems.join('\n');
      assert.equal(
        'boxes' in parsed ? parsed.boxes.length : (parsed as ReturnType<typeof parseCoco>).images.flatMap((i) => i.boxes).length,
        0,
        `${name}: no bad box kept`,
      );
    } catch (e) {
      said = (e as Error).message;
    }
    assert.match(said, new RegExp(err), name);
  }
});

test('bad model files: the file is named with the problem, exit 1', () => {
  for (const [name, err] of Object.entries(expected.models as Record<string, string>)) {
    const r = cli(['info', '--model', join(CORPUS, 'models', name)]);
    assert.equal(r.status, 1, name);
    assert.match(r.stderr, new RegExp(`${name.replace('.', '\\.')}: .*(${err})`), name);
  }
});

let server: ReturnType<typeof spawn>;
let port = 0;
before(async () => {
  server = spawn(process.execPath, [CLI, 'serve', '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  port = await new Promise<number>((res, rej) => {
    let err = '';
    server.stderr!.on('data', (d) => {
      err += d;
      const m = /serving .* at http:\/\/[\d.]+:(\d+)/.exec(err);
      if (m) res(Number(m[1]));
    });
    server.on('exit', (code) => rej(new Error(`server exited ${code}: ${err}`)));
  });
});
after(() => server.kill());

/** Sends a raw request file ({{HOST}} filled in, Content-Length computed) and reads status and body. */
function sendRaw(file: string): Promise<{ status: number; body: string }> {
  const text = readFileSync(file, 'latin1').replaceAll('{{HOST}}', `127.0.0.1:${port}`);
  const cut = text.indexOf('\r\n\r\n');
  const head = text.slice(0, cut);
  const body = text.slice(cut + 4);
  const request = `${head}\r\n${body ? `Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\n` : ''}Connection: close\r\n\r\n${body}`;
  return new Promise((res, rej) => {
    const s = connect(port, '127.0.0.1', () => s.end(Buffer.from(request, 'latin1')));
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('end', () => res({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(got)?.[1] ?? 0), body: got.slice(got.indexOf('\r\n\r\n') + 4) }));
    s.on('error', rej);
  });
}

test('bad HTTP requests: a 4xx with a JSON error, and the server stays up', async () => {
  for (const [name, [status, err]] of Object.entries(expected.http as Record<string, [number, string]>)) {
    const r = await sendRaw(join(CORPUS, 'http', name));
    assert.equal(r.status, status, `${name}: ${r.body}`);
    assert.match(r.body, new RegExp(err), name);
  }
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
});

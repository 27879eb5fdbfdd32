/**
 * Scale-out on a real redis-server with real worker processes: a worker killed with
 * SIGKILL mid-batch loses nothing, and submit --wait returns every image with the counts
 * of a local count.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CLI, ROOT, SAMPLES, tmp } from './helpers.js';

const freePort = () =>
  new Promise<number>((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });

const procs: ChildProcess[] = [];
after(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
});

async function startRedis(dir: string): Promise<string> {
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  procs.push(redis);
  redis.on('error', (e) => assert.fail(`redis-server could not start (${e.message}): .ci/run installs Debian's redis-server`));
  for (let t = 0; t < 100; t++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout?.trim() === 'PONG') return `redis://127.0.0.1:${port}`;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('redis-server did not answer');
}

function worker(url: string): { proc: ChildProcess; lines: () => string[] } {
  let out = '';
  const proc = spawn(process.execPath, [CLI, 'worker', '--redis', url, '--stall-seconds', '3', '--threads', '1'], { cwd: ROOT });
  proc.stderr!.on('data', (d) => {
    out += d;
  });
  procs.push(proc);
  return { proc, lines: () => out.split('\n').filter((l) => l.startsWith('counted ')) };
}

/** After a spawnSync (which blocks this process's event loop), let the workers' output arrive. */
const drain = () => new Promise((r) => setTimeout(r, 500));

test('submit --wait after a worker is killed returns every image with the counts of a local count', async () => {
  const dir = tmp();
  const slides = join(dir, 'slides');
  const names = ['BloodImage_00004.jpg', 'BloodImage_00011.jpg', 'BloodImage_00017.jpg', '069e00b1-4852-5629-b1a7-b115562d6bd7.jpg'];
  for (const s of ['A', 'B']) {
    mkdirSync(join(slides, s), { recursive: true });
    for (let i = 0; i < 12; i++) {
      const name = names[i % names.length];
      assert.ok(name);
      copyFileSync(join(SAMPLES, name), join(slides, s, `f${String(i).padStart(2, '0')}.jpg`));
    }
  }
  const url = await startRedis(dir);
  const w1 = worker(url);
  const w2 = worker(url);
  const submit = spawn(process.execPath, [CLI, 'submit', '--redis', url, slides, '--wait', '--json', join(dir, 'q.json'), '--quiet'], { cwd: ROOT });
  let subErr = '';
  submit.stderr.on('data', (d) => {
    subErr += d;
  });
  const submitted = new Promise<number>((ok) => submit.on('exit', (c) => ok(c ?? -1)));
  // kill worker 1 once it is working: it holds a job whose lock will lapse
  for (let t = 0; t < 1200 && w1.lines().length < 2; t++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(w1.lines().length >= 2, 'worker 1 never counted');
  w1.proc.kill('SIGKILL');
  const code = await submitted;
  assert.equal(code, 0, subErr);
  assert.ok(w2.lines().length > 0, 'the surviving worker counted nothing');
  assert.ok(w1.lines().length < 24, `worker 1 finished ${w1.lines().length} of 24 before the kill: nothing was in flight`);
  const queued = JSON.parse(readFileSync(join(dir, 'q.json'), 'utf8'));
  const local = spawnSync(process.execPath, [CLI, 'count', slides, '--json', '-', '--quiet'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(local.status, 0, local.stderr);
  const want = JSON.parse(local.stdout);
  assert.equal(queued.images.length, 24);
  assert.deepEqual(
    queued.images.map((i: { file: string }) => i.file),
    want.images.map((i: { file: string }) => i.file),
  );
  for (const [k, im] of queued.images.entries()) {
    assert.deepEqual(im.counts, want.images[k].counts, im.file);
    assert.deepEqual(im.uncertain, want.images[k].uncertain, im.file);
  }
  assert.deepEqual(queued.samples, want.samples);
  assert.deepEqual(queued.totals, want.totals);
  // the status command sees the finished batch, and a second submit of it counts nothing again
  const st = spawnSync(process.execPath, [CLI, 'status', '--redis', url, '--json'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(JSON.parse(st.stdout).completed, 24);
  const before = w2.lines().length;
  const again = spawnSync(process.execPath, [CLI, 'submit', '--redis', url, slides, '--wait', '--json', '-', '--quiet'], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  assert.equal(again.status, 0, again.stderr);
  assert.equal(JSON.parse(again.stdout).images.length, 24);
  await drain();
  assert.equal(w2.lines().length, before);
});

test('submit and status name an unreachable Redis; an image that is no image is reported with its reason at once', async () => {
  const dead = spawnSync(process.execPath, [CLI, 'status', '--redis', 'redis://127.0.0.1:1'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(dead.status, 2);
  assert.match(dead.stderr, /cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
  const dir = tmp();
  const url = await startRedis(dir);
  const w = worker(url);
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'good.jpg'));
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'broken.jpg'), 'not a jpeg');
  const r = spawnSync(
    process.execPath,
    [CLI, 'submit', '--redis', url, join(dir, 'good.jpg'), join(dir, 'broken.jpg'), '--attempts', '2', '--wait', '--json', '-', '--quiet'],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  assert.equal(r.status, 1, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.totals.images, 1);
  // bad bytes are not tried again: the answer would be the same
  assert.match(doc.images[1].error, /^not an image .* \(after 1 attempt\(s\)\)$/);
  assert.equal(readFileSync(join(dir, 'good.jpg')).length > 0, true);
  // the broken image replaced by a smear is a new image: counted, not the old failure
  // returned; the unchanged good one is not counted again
  copyFileSync(join(SAMPLES, 'BloodImage_00011.jpg'), join(dir, 'broken.jpg'));
  await drain();
  const counted = w.lines().length;
  const submitAgain = (...extra: string[]) =>
    spawnSync(process.execPath, [CLI, 'submit', '--redis', url, join(dir, 'good.jpg'), join(dir, 'broken.jpg'), '--wait', '--json', '-', '--quiet', ...extra], {
      cwd: ROOT,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
  const mended = submitAgain();
  assert.equal(mended.status, 0, mended.stderr);
  const local = JSON.parse(
    spawnSync(process.execPath, [CLI, 'count', join(SAMPLES, 'BloodImage_00011.jpg'), '--json', '-', '--quiet'], { cwd: ROOT, encoding: 'utf8' }).stdout,
  );
  assert.deepEqual(JSON.parse(mended.stdout).images[1].counts, local.images[0].counts);
  await drain();
  assert.equal(w.lines().length, counted + 1);
  // --fresh counts the whole batch again (after the workers changed model, say)
  const fresh = submitAgain('--fresh');
  assert.equal(fresh.status, 0, fresh.stderr);
  assert.deepEqual(JSON.parse(fresh.stdout).totals, JSON.parse(mended.stdout).totals);
  await drain();
  assert.equal(w.lines().length, counted + 3);
  w.proc.kill('SIGTERM');
});

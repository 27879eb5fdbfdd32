/**
 * Scale-out throughput in one run: the same images counted by a local `hemocount count`,
 * then through Redis + BullMQ by 1 worker and by 2 workers (each worker a process with
 * one onnxruntime thread, and 1 worker with the default threads), all on this machine.
 * Usage: node dist/bench/queue.js [N images] [--out docs/queue.json]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT } from '../test/helpers.js';
import { machine, smearFolder } from './smears.js';

const n = Number(process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : 100);
const outAt = process.argv.indexOf('--out');
const outFile = outAt > 0 ? process.argv[outAt + 1] : undefined;
if (outAt > 0 && !outFile) throw new Error('--out needs a file name');
const { dir, images } = smearFolder(n, 'hemocount-bench-queue-');

const port = 20000 + Math.floor(Math.random() * 20000);
const url = `redis://127.0.0.1:${port}`;
const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
for (let t = 0; t < 100; t++) {
  if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout?.trim() === 'PONG') break;
  await new Promise((r) => setTimeout(r, 100));
}

const timed = (args: string[]) => {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
};

async function withWorkers(k: number, threads: string[]): Promise<number> {
  const ws: ChildProcess[] = [];
  for (let i = 0; i < k; i++) {
    ws.push(spawn(process.execPath, [CLI, 'worker', '--redis', url, '--quiet', ...threads], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] }));
  }
  // workers are ready once they print their banner (model loaded)
  await Promise.all(ws.map((w) => new Promise<void>((ok) => w.stderr!.on('data', (d) => String(d).includes('waiting for jobs') && ok()))));
  spawnSync('redis-cli', ['-p', String(port), 'flushall']);
  const s = timed(['submit', '--redis', url, images, '--wait', '--quiet', '--json', join(dir, `q${k}${threads.join('')}.json`)]);
  for (const w of ws) w.kill('SIGTERM');
  await Promise.all(ws.map((w) => new Promise((r) => w.on('exit', r))));
  return s;
}

const results: Record<string, { seconds: number; imagesPerS: number }> = {};
const add = (name: string, s: number) => {
  const r = { seconds: +s.toFixed(2), imagesPerS: +(n / s).toFixed(2) };
  results[name] = r;
  return r;
};
add('local count (one process)', timed(['count', images, '--quiet', '--json', join(dir, 'local.json')]));
add('queue, 1 worker (default threads)', await withWorkers(1, []));
const oneWorker = add('queue, 1 worker (1 thread)', await withWorkers(1, ['--threads', '1']));
const twoWorkers = add('queue, 2 workers (1 thread each)', await withWorkers(2, ['--threads', '1']));
redis.kill();
const doc = {
  machine: machine(),
  images: n,
  model: 'the bundled default (int8)',
  note: 'wall time of the whole command (process start, model load, queueing and collecting included)',
  results,
  ratio2to1: +(oneWorker.seconds / twoWorkers.seconds).toFixed(2),
};
console.log(JSON.stringify(doc, null, 1));
if (outFile) writeFileSync(outFile, JSON.stringify(doc, null, 1) + '\n');

/**
 * Architecture candidates against the speed budget: each candidate network (random weights,
 * exported by `python3 -m hemocount_train arch-candidates`) is timed in onnxruntime-node at
 * 640x480 (padded to 640x512), interleaved in one run so that the ratios hold while the
 * machine's speed drifts. Accuracy needs training; this says what each candidate costs.
 * Usage: node dist/bench/architectures.js [--runs 30] [--out docs/architectures.json]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { findTorchPython } from '../src/adapters/python.js';
import { ROOT } from '../test/helpers.js';
import { machine } from './smears.js';
import * as ort from 'onnxruntime-node';

const { values: a } = parseArgs({ options: { runs: { type: 'string', default: '30' }, out: { type: 'string' } } });
const runs = Number(a.runs);
const dir = mkdtempSync(join(tmpdir(), 'hemocount-arch-'));
try {
  const { python } = findTorchPython();
  const r = spawnSync(python, ['-m', 'hemocount_train', 'arch-candidates', '--out', dir], { cwd: join(ROOT, 'training'), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`arch-candidates failed: ${r.stderr.trim().split('\n').pop()}`);
  const listed = JSON.parse(readFileSync(join(dir, 'candidates.json'), 'utf8')) as { name: string; file: string; gflop: number; parameters: number }[];
  const sessions = await Promise.all(listed.map((c) => ort.InferenceSession.create(c.file)));
  const [h, w] = [512, 640];
  const image = new ort.Tensor(
    'float32',
    Float32Array.from({ length: 3 * h * w }, (_, i) => ((i * 7919) % 255) / 255 - 0.5),
    [1, 3, h, w],
  );
  const times: number[][] = listed.map(() => []);
  for (let i = 0; i < runs + 3; i++) {
    for (const [k, s] of sessions.entries()) {
      const t = performance.now();
      await s.run({ image });
      if (i >= 3) times[k]!.push(performance.now() - t); // three warm-up rounds
    }
  }
  const p50 = (v: number[]) => [...v].sort((x, y) => x - y)[v.length >> 1]!;
  const base = p50(times[0]!);
  const rows = listed.map((c, k) => ({
    name: c.name,
    parameters: c.parameters,
    gflop: c.gflop,
    forward_p50_ms: +p50(times[k]!).toFixed(1),
    vs_compact: +(p50(times[k]!) / base).toFixed(2),
  }));
  const doc = {
    machine: machine(),
    loadavg: loadavg().map((v) => +v.toFixed(2)),
    input: `${w}x${h} (640x480 padded)`,
    runs,
    note: 'onnxruntime-node default threads, random weights (speed does not depend on them); candidates interleaved in one run',
    candidates: rows,
  };
  console.log(JSON.stringify(doc, null, 1));
  console.log(
    [
      '| candidate | parameters | GFLOP | forward p50 [ms] | vs compact |',
      '|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.name} | ${(r.parameters / 1e6).toFixed(2)} M | ${r.gflop} | ${r.forward_p50_ms} | ${r.vs_compact}x |`),
    ].join('\n'),
  );
  if (a.out) writeFileSync(a.out, `${JSON.stringify(doc, null, 1)}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

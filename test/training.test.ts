/** The Python training side: its pytest suite, and `hemocount train` finding (or not) PyTorch. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { findTorchPython } from '../src/adapters/python.js';
import { CLI, ROOT, tmp } from './helpers.js';

test('training pytest suite (readers, loss, resume, export)', { timeout: 900_000 }, () => {
  const { python } = findTorchPython();
  // HEMOCOUNT_NODE: the --patience test scores epochs with this Node, as `hemocount train` does
  const r = spawnSync(python, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests'], {
    cwd: join(ROOT, 'training'),
    encoding: 'utf8',
    env: { ...process.env, HEMOCOUNT_NODE: process.execPath },
  });
  const tail = (r.stdout + r.stderr).trim().split('\n').slice(-25).join('\n');
  process.stderr.write(tail.split('\n').slice(-1)[0] + '\n');
  assert.equal(r.status, 0, tail);
  assert.match(r.stdout, /\d+ passed/);
});

test('hemocount train says clearly when no Python has PyTorch', () => {
  const dir = tmp();
  const r = spawnSync(process.execPath, [CLI, 'train', '--help'], {
    encoding: 'utf8',
    env: { ...process.env, HEMOCOUNT_PYTHON: '/bin/false', PATH: dir },
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no Python that can import torch/);
  assert.match(r.stderr, /apt-get install python3-torch python3-torchvision/);
});

test('hemocount train --help reaches the Python module', () => {
  const r = spawnSync(process.execPath, [CLI, 'train', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /--freeze-backbone/);
  assert.match(r.stdout, /--resume/);
});

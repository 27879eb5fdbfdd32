/**
 * The npm package as a user gets it: packed, installed into a fresh folder without the
 * repository's .npmrc, and counting a smear with the bundled model.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI, ROOT, SAMPLES, tmp } from './helpers.js';

test('the packed tarball holds the library and model (no samples, no tests) and installs and counts in a fresh folder', { timeout: 300_000 }, () => {
  const out = tmp('hemocount-pack-');
  // dist/ is already built by the test command: pack without running prepare again
  const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(pack.status, 0, pack.stderr);
  const [info] = JSON.parse(pack.stdout);
  const files: string[] = info.files.map((f: { path: string }) => f.path);
  assert.ok(files.includes('models/hemocount-default.onnx'));
  assert.ok(files.includes('dist/src/index.js'));
  assert.ok(files.includes('web/dist/index.html'));
  assert.ok(files.includes('npm-shrinkwrap.json'));
  assert.deepEqual(
    files.filter((f) => /^(samples|test|dist\/test|training\/runs|training\/tests)\//.test(f)),
    [],
  );
  assert.ok(info.size < 20e6, `${info.size} bytes`);
  const app = tmp('hemocount-fresh-');
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'lab', version: '1.0.0', private: true }));
  // onnxruntime-node's install script would fetch CUDA files: the README tells users to skip it the same way
  const env: NodeJS.ProcessEnv = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' };
  for (const k of Object.keys(env)) if (k.startsWith('npm_')) delete env[k]; // not this test run's npm settings
  const inst = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(out, info.filename)], { cwd: app, encoding: 'utf8', env });
  assert.equal(inst.status, 0, inst.stderr);
  const sample = join(SAMPLES, 'BloodImage_00004.jpg');
  const theirs = spawnSync(join(app, 'node_modules', '.bin', 'hemocount'), ['count', sample, '--json', '-', '--quiet'], { cwd: app, encoding: 'utf8' });
  assert.equal(theirs.status, 0, theirs.stderr);
  const ours = spawnSync(process.execPath, [CLI, 'count', sample, '--json', '-', '--quiet'], { cwd: ROOT, encoding: 'utf8' });
  assert.deepEqual(JSON.parse(theirs.stdout).images[0].counts, JSON.parse(ours.stdout).images[0].counts);
  // the library entry point too
  const lib = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { loadModel } from 'hemocount'; const m = await loadModel(); console.log(JSON.stringify((await m.count(${JSON.stringify(sample)})).counts));`,
    ],
    { cwd: app, encoding: 'utf8' },
  );
  assert.equal(lib.status, 0, lib.stderr);
  assert.deepEqual(JSON.parse(lib.stdout), JSON.parse(ours.stdout).images[0].counts);
});

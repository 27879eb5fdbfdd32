/** Finding a Python that can import PyTorch, for `hemocount train`. */
import { spawnSync } from 'node:child_process';

/** HEMOCOUNT_PYTHON first, then the usual names; Debian's /usr/bin/python3 sees apt's torch. */
export function pythonCandidates(env = process.env): string[] {
  const list = [env.HEMOCOUNT_PYTHON, 'python3', '/usr/bin/python3', 'python'].filter((p): p is string => Boolean(p));
  return [...new Set(list)];
}

export interface PythonFound {
  python: string;
  torch: string;
  /** Whether it can import onnx too (export, --patience and --init from an ONNX file need it). */
  onnx: boolean;
}

export function findTorchPython(env = process.env): PythonFound {
  const tried: string[] = [];
  for (const py of pythonCandidates(env)) {
    const r = spawnSync(py, ['-c', 'import importlib.util as u, torch, torchvision; print(torch.__version__, u.find_spec("onnx") is not None)'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (r.status === 0) {
      const [torch = '', onnx] = r.stdout.trim().split(' ');
      return { python: py, torch, onnx: onnx === 'True' };
    }
    const code = (r.error as NodeJS.ErrnoException | undefined)?.code;
    tried.push(
      `${py}: ${r.error ? (code === 'ENOENT' ? 'not found' : `cannot be run (${code ?? r.error.message})`) : (r.stderr.trim().split('\n').pop() ?? 'failed')}`,
    );
    if (env.HEMOCOUNT_PYTHON && py === env.HEMOCOUNT_PYTHON) break; // an explicit choice is not second-guessed
  }
  throw new Error(
    `no Python that can import torch and torchvision was found.\n  tried: ${tried.join('\n         ')}\n` +
      `  install them with: apt-get install python3-torch python3-torchvision python3-onnx\n` +
      `  or set HEMOCOUNT_PYTHON to an interpreter that has them.`,
  );
}

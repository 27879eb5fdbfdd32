/**
 * Detection on several cores. onnxruntime-node runs a network pass synchronously on the
 * calling thread, so one process runs one pass at a time however many images are in
 * flight; a pool of worker threads, each with its own session sized to its share of the
 * cores, runs one pass per worker side by side. Decoding happens in the worker too; the
 * decoded pixels (for drawing) come back without a copy.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Detected, ModelDetectOptions } from '../detector.js';

interface Lane {
  worker: Worker;
  ready: Promise<void>;
  loaded: boolean;
  busy: number;
}

interface Job {
  resolve: (d: Detected) => void;
  reject: (e: Error) => void;
  lane: Lane;
}

export interface PoolOptions {
  /** Worker threads (default: the machine's cores). */
  workers?: number;
  /** onnxruntime threads per worker (default: cores / workers, at least 1). */
  threads?: number;
}

export class DetectorPool {
  private lanes: Lane[] = [];
  private jobs = new Map<number, Job>();
  private nextId = 0;
  private closed = false;

  private constructor(
    private readonly modelPath: string | undefined,
    private readonly threads: number,
  ) {}

  /** Start the workers and load the model in each (rejects if any cannot load it). */
  static async open(modelPath: string | undefined, opts: PoolOptions = {}): Promise<DetectorPool> {
    const n = Math.max(1, opts.workers ?? availableParallelism());
    const pool = new DetectorPool(modelPath, opts.threads ?? Math.max(1, Math.floor(availableParallelism() / n)));
    for (let i = 0; i < n; i++) pool.lanes.push(pool.spawn());
    try {
      await Promise.all(pool.lanes.map((l) => l.ready));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  get size(): number {
    return this.lanes.length;
  }

  private spawn(): Lane {
    const worker = new Worker(new URL('./pool-worker.js', import.meta.url), { workerData: { model: this.modelPath, threads: this.threads } });
    const lane: Lane = { worker, busy: 0, loaded: false, ready: Promise.resolve() };
    let failure = '';
    lane.ready = new Promise<void>((resolve, reject) => {
      worker.once('message', (m: { ready?: true; error?: string }) => {
        lane.loaded = !!m.ready;
        if (m.ready) resolve();
        else reject(new Error(m.error));
      });
      worker.once('error', reject);
    });
    worker.on('error', (e) => {
      failure = `: ${e.message}`;
    });
    worker.on('message', (m: { id?: number; det?: Detected; error?: string }) => {
      if (m.id === undefined) return;
      const job = this.jobs.get(m.id);
      this.jobs.delete(m.id);
      lane.busy--;
      if (m.det) job?.resolve(m.det);
      else job?.reject(new Error(m.error));
    });
    worker.on('exit', (code) => {
      // a worker that dies (out of memory, a crash in native code) fails its images, not
      // the run: they are reported and a fresh worker takes its place
      if (this.closed || !lane.loaded) return;
      for (const [id, job] of this.jobs) {
        if (job.lane === lane) {
          this.jobs.delete(id);
          job.reject(new Error(`the detection worker stopped (exit code ${code})${failure}`));
        }
      }
      const i = this.lanes.indexOf(lane);
      if (i >= 0) this.lanes[i] = this.spawn();
    });
    return lane;
  }

  /** Detect in the least busy worker; same result as Model.detect on the same file. */
  async detect(path: string, opts: ModelDetectOptions = {}): Promise<Detected> {
    if (this.closed) throw new Error('the detector pool is closed');
    const lane = this.lanes.reduce((a, b) => (b.busy < a.busy ? b : a));
    await lane.ready;
    const id = this.nextId++;
    lane.busy++;
    return new Promise<Detected>((resolve, reject) => {
      this.jobs.set(id, { resolve, reject, lane });
      lane.worker.postMessage({ id, path, opts });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.lanes.map((l) => l.worker.terminate()));
  }
}

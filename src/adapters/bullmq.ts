/**
 * Count jobs on Redis through BullMQ: one job per image, any number of workers on any
 * number of machines. BullMQ gives the guarantees: a killed worker's job is redelivered
 * (stalled-job recovery), a failing job is retried a bounded number of times, and a job id
 * derived from the image (path, size, time) and the settings makes a resubmitted batch reuse its jobs, so an
 * image is never counted twice into one result.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Job, Queue, QueueEvents, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { failedResult, type ImageResult, roundResult } from '../core/formats.js';
import type { PerClass } from '../core/types.js';
import { Model } from '../detector.js';

export const QUEUE = 'hemocount-count';
/** Images up to this size may travel inside the job (no shared storage needed). */
export const MAX_INLINE_BYTES = 16 * 1024 * 1024;

export interface CountJob {
  /** The path as given (reported in results), and where workers read it unless inline. */
  file: string;
  sample?: string;
  /** The image bytes, base64, when sent inline. */
  inline?: string;
  threshold?: string;
  review?: string;
  scale: 'auto' | number;
  tta?: boolean;
  whiteBalance?: boolean;
  maxPixels?: number;
}

export interface CountJobResult {
  result: ImageResult;
  model: { name: string; version: string; sha256: string };
  thresholds: { count: PerClass<number>; review: PerClass<number> };
}

/** A Redis connection for BullMQ, after checking that the server answers (a clear error, not endless retries). */
export async function connect(url: string, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<Redis> {
  let u: URL;
  try {
    u = new URL(url);
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error();
  } catch {
    throw new Error(`--redis '${url}' is not a Redis URL (e.g. redis://127.0.0.1:6379)`);
  }
  const probe = new Redis(url, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => {}); // reported below
  try {
    await probe.connect();
    await probe.ping();
  } catch (e) {
    throw new Error(`cannot reach Redis at ${url} (${(e as Error).message})`);
  } finally {
    probe.disconnect();
  }
  // BullMQ workers block on Redis: they need retries without a per-request limit
  const redis = new Redis(url, { maxRetriesPerRequest: null });
  // ioredis and BullMQ retry by themselves; without this, each retry printed an error and its stack
  let down = false;
  const lost = (e: Error) => {
    if (down) return;
    down = true;
    log(`Redis at ${url} unreachable (${e.message}): retrying`);
  };
  outages.set(redis, lost);
  redis.on('error', lost);
  redis.on('ready', () => {
    if (down) log(`Redis at ${url} reachable again`);
    down = false;
  });
  return redis;
}

/** Each connection's one-line outage report, for the BullMQ objects and connections made from it. */
const outages = new WeakMap<Redis, (e: Error) => void>();
function reportOutages<T extends { on(event: 'error', f: (e: Error) => void): unknown }>(redis: Redis, emitter: T): T {
  emitter.on('error', outages.get(redis) ?? (() => {}));
  return emitter;
}

export interface WorkerOptions {
  model?: string;
  concurrency?: number;
  threads?: number;
  /** A job whose worker stops renewing its lock for this long is redelivered. */
  stallSeconds?: number;
  log?: (line: string) => void;
}

/** Take count jobs until closed. */
export async function startWorker(redis: Redis, o: WorkerOptions = {}): Promise<{ worker: Worker; model: Model }> {
  const model = await Model.load(o.model, { threads: o.threads });
  const lock = (o.stallSeconds ?? 30) * 1000;
  const worker = new Worker<CountJob, CountJobResult>(
    QUEUE,
    async (job) => {
      const d = job.data;
      const th = model.thresholds(d.threshold, d.review);
      const input = d.inline ? Buffer.from(d.inline, 'base64') : d.file;
      let r: ImageResult;
      try {
        r = await model.count(input, {
          thresholds: th.count,
          review: th.review,
          scale: d.scale,
          tta: d.tta,
          whiteBalance: d.whiteBalance,
          maxPixels: d.maxPixels,
          name: d.file,
        });
      } catch (e) {
        // the bytes are no image, or too large: trying again gives the same answer (a missing,
        // empty or truncated file may be storage still being written, and is tried again)
        const m = (e as Error).message;
        throw /not an image|megapixels, above the limit/.test(m) && !/empty/i.test(m) ? new UnrecoverableError(m) : e;
      }
      if (d.sample !== undefined) r.sample = d.sample;
      o.log?.(`counted ${d.file}`);
      return { result: roundResult(r), model: model.info, thresholds: th };
    },
    { connection: redis, concurrency: o.concurrency ?? 1, lockDuration: lock, stalledInterval: Math.max(1000, lock / 2), maxStalledCount: 3 },
  );
  reportOutages(redis, worker);
  worker.on('failed', (job, err) => o.log?.(`failed ${job?.data.file}: ${err.message.replace(`${job?.data.file}: `, '')} (attempt ${job?.attemptsMade})`));
  return { worker, model };
}

export interface Planned {
  path: string;
  sample?: string;
}

/**
 * One job id per image: its path, sample, size, times and inode (a file replaced or edited,
 * even by a copy that keeps the old time, is a new image) and the settings. Submitting the same images again finds their jobs
 * (resubmitting resumes, and nothing is counted twice); a repeat within one batch gets a
 * suffix, so every image has a job of its own.
 */
export function jobIds(files: Planned[], settings: Omit<CountJob, 'file' | 'sample' | 'inline'>, inline: boolean): string[] {
  const common = JSON.stringify({ settings, inline });
  const seen = new Map<string, number>();
  return files.map((f) => {
    let stamp = '';
    try {
      const st = statSync(f.path);
      stamp = `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;
    } catch {} // unreadable here: its job will say why
    const id = createHash('sha256')
      .update(`${common}\0${resolve(f.path)}\0${f.sample ?? ''}\0${stamp}`)
      .digest('hex')
      .slice(0, 24);
    const n = (seen.get(id) ?? 0) + 1;
    seen.set(id, n);
    return n === 1 ? id : `${id}-${n}`;
  });
}

/** A short name for a batch in messages: a digest of its job ids. */
const batchName = (ids: string[]) => createHash('sha256').update(ids.join('\0')).digest('hex').slice(0, 16);

export interface SubmitOptions {
  settings: Omit<CountJob, 'file' | 'sample' | 'inline'>;
  inline?: boolean;
  attempts?: number;
  /** Count again the images an earlier submit of this batch already counted (e.g. after the workers changed model). */
  fresh?: boolean;
  /** Called as results arrive: (done, total). */
  progress?: (done: number, total: number) => void;
}

/**
 * Enqueue one job per image. Jobs already there from an earlier submit of the same batch are
 * kept, not added again, except failed ones, which are tried again (and, with `fresh`,
 * counted ones, which are counted again). Returns the batch's name and its job ids.
 */
export async function submit(redis: Redis, files: Planned[], o: SubmitOptions): Promise<{ batch: string; ids: string[] }> {
  const ids = jobIds(files, o.settings, !!o.inline);
  const queue = reportOutages(redis, new Queue<CountJob>(QUEUE, { connection: redis }));
  try {
    for (let i = 0; i < files.length; i += 500) {
      // again: a failed job, and with --fresh a counted one, moved back to the queue in one step
      // (BullMQ's retry is atomic: a job another submit retried meanwhile is left as it is)
      await Promise.all(
        ids.slice(i, i + 500).map(async (id) => {
          const job = await Job.fromId(queue, id);
          const state = job ? await job.getState() : 'unknown';
          if (!job || !(state === 'failed' || (o.fresh && state === 'completed'))) return;
          await job.retry(state, { resetAttemptsMade: true, resetAttemptsStarted: true }).catch(() => {});
        }),
      );
      const chunk = await Promise.all(
        files.slice(i, i + 500).map(async (f, k) => {
          let inline: string | undefined;
          if (o.inline) {
            const bytes = await readFile(f.path).catch((e) => {
              throw new Error(`${f.path}: cannot read it to send inline (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
            });
            if (bytes.length > MAX_INLINE_BYTES)
              throw new Error(
                `${f.path}: ${(bytes.length / 2 ** 20).toFixed(2)} MB is above the inline limit of ${MAX_INLINE_BYTES / 2 ** 20} MB: put it on storage the workers read, and submit without --inline`,
              );
            inline = bytes.toString('base64');
          }
          return {
            name: 'count',
            data: { ...o.settings, file: f.path, ...(f.sample !== undefined && { sample: f.sample }), ...(inline && { inline }) },
            opts: {
              jobId: ids[i + k],
              attempts: o.attempts ?? 3,
              backoff: { type: 'exponential', delay: 1000 },
              removeOnComplete: { age: 7 * 24 * 3600 },
              removeOnFail: { age: 7 * 24 * 3600 },
            },
          };
        }),
      );
      await queue.addBulk(chunk);
    }
  } finally {
    await queue.close();
  }
  return { batch: batchName(ids), ids };
}

/**
 * Wait for every job of a batch and return one result per image, in input order: a final
 * failure (attempts used up) becomes a failed result with BullMQ's reason.
 */
export async function collect(
  redis: Redis,
  ids: string[],
  files: Planned[],
  o: Pick<SubmitOptions, 'progress'> & { signal?: AbortSignal } = {},
): Promise<{ results: ImageResult[]; runs: Omit<CountJobResult, 'result'>[] }> {
  const queue = reportOutages(redis, new Queue<CountJob, CountJobResult>(QUEUE, { connection: redis }));
  const eventConnection = reportOutages(redis, redis.duplicate()); // QueueEvents blocks on its own connection
  const events = reportOutages(redis, new QueueEvents(QUEUE, { connection: eventConnection }));
  const out: (ImageResult | undefined)[] = new Array(files.length);
  // the models and thresholds the workers used, by model hash + thresholds
  const runs = new Map<string, Omit<CountJobResult, 'result'>>();
  const index = new Map(files.map((file, i) => [ids[i]!, { i, file }]));
  let done = 0;
  let wake = () => {};
  const settle = (id: string, r: ImageResult, run?: Omit<CountJobResult, 'result'>) => {
    const i = index.get(id)?.i;
    if (i === undefined || out[i]) return;
    out[i] = r;
    if (run) runs.set(JSON.stringify(run), run);
    done++;
    o.progress?.(done, files.length);
    wake();
  };
  const failed = (f: Planned, reason: string): ImageResult => ({
    ...failedResult(f.path, reason.replace(`${f.path}: `, '')),
    ...(f.sample !== undefined && { sample: f.sample }),
  });
  const vanished = new Map<string, number>();
  const check = async (id: string) => {
    const { i, file } = index.get(id)!;
    if (out[i]) return;
    // the state first, then the job: a job read before it finished and a state read after
    // would be "completed" without its result
    const state = await queue.getJobState(id);
    if (state === 'unknown') {
      // gone only when still gone a while later: another submit may be moving it back to the queue
      const first = vanished.get(id) ?? vanished.set(id, Date.now()).get(id)!;
      if (Date.now() - first < 5000) return;
      return settle(id, failed(file, 'the job disappeared from the queue (removed or expired): submit again'));
    }
    vanished.delete(id);
    if (state !== 'completed' && state !== 'failed') return;
    const job = await Job.fromId<CountJob, CountJobResult>(queue, id);
    if (!job) return settle(id, failed(file, 'the job disappeared from the queue (removed or expired): submit again'));
    if (state === 'completed' && job.returnvalue) settle(id, job.returnvalue.result, { model: job.returnvalue.model, thresholds: job.returnvalue.thresholds });
    else if (state === 'failed') settle(id, failed(file, `${job.failedReason} (after ${job.attemptsMade} attempt(s))`));
  };
  try {
    await events.waitUntilReady();
    events.on('completed', ({ jobId }) => void check(jobId).catch(() => {}));
    events.on('failed', ({ jobId }) => void check(jobId).catch(() => {}));
    // a sweep finds what finished before the listener started, and anything an event missed
    let next = 0;
    const ids = [...index.keys()];
    while (done < files.length) {
      if (o.signal?.aborted) throw new Error('interrupted');
      // ids is not empty: it has one id per file, and a file is still to come
      for (let k = 0; k < 200 && done < files.length; k++, next = (next + 1) % ids.length) await check(ids[next]!);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 1000);
      });
    }
  } finally {
    await events.close();
    await queue.close();
    eventConnection.disconnect(); // BullMQ leaves connections it was given open
  }
  return { results: out as ImageResult[], runs: [...runs.values()] };
}

/** Jobs by state, and the workers connected now. */
export async function queueStatus(redis: Redis) {
  const queue = reportOutages(redis, new Queue(QUEUE, { connection: redis }));
  try {
    const n = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized');
    const workers = await queue.getWorkers();
    return {
      queue: QUEUE,
      waiting: (n.waiting ?? 0) + (n.prioritized ?? 0),
      active: n.active ?? 0,
      retrying: n.delayed ?? 0,
      completed: n.completed ?? 0,
      failed: n.failed ?? 0,
      workers: workers.length,
    };
  } finally {
    await queue.close();
  }
}

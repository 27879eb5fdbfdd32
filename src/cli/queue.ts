/** hemocount worker / submit / status: counting spread over machines through BullMQ on Redis. */
import { resolve } from 'node:path';
import { collect, connect, queueStatus, startWorker, submit } from '../adapters/bullmq.js';
import { OutputGuard } from '../adapters/files.js';
import { countDocument, type ImageResult } from '../core/formats.js';
import { Model } from '../detector.js';
import { type CountArgs, planInputs, preflight, report, UsageError, writeDocument } from './count.js';
import { c, log, Progress } from './ui.js';

async function redisOf(url: string | undefined) {
  if (!url) throw new UsageError('--redis URL is required (e.g. redis://127.0.0.1:6379)');
  try {
    return await connect(url, (line) => log(c.dim(line)));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function runWorker(a: {
  redis?: string;
  model?: string;
  concurrency?: number;
  threads?: number;
  stallSeconds?: number;
  quiet: boolean;
}): Promise<number> {
  const redis = await redisOf(a.redis);
  const { worker, model } = await startWorker(redis, {
    model: a.model,
    concurrency: a.concurrency,
    threads: a.threads,
    stallSeconds: a.stallSeconds,
    log: a.quiet ? undefined : (line) => log(line),
  });
  log(`hemocount worker: ${model.info.name} ${model.info.version}, concurrency ${a.concurrency ?? 1}, waiting for jobs on ${a.redis} (Ctrl-C to stop)`);
  await new Promise<void>((done) => {
    const stop = () => {
      log('stopping: finishing the jobs in hand');
      void worker
        .close()
        .then(() => redis.quit())
        .then(() => done());
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await model.release();
  return 0;
}

export interface SubmitArgs
  extends Pick<
    CountArgs,
    | 'inputs'
    | 'recursive'
    | 'samples'
    | 'sample'
    | 'rbcCount'
    | 'samplesCsv'
    | 'sampleReport'
    | 'json'
    | 'csv'
    | 'threshold'
    | 'review'
    | 'scale'
    | 'tta'
    | 'whiteBalance'
    | 'maxPixels'
    | 'overwrite'
    | 'quiet'
  > {
  redis?: string;
  wait: boolean;
  inline: boolean;
  attempts?: number;
  fresh?: boolean;
}

export async function runSubmit(a: SubmitArgs): Promise<number> {
  if (!a.inputs.length && !a.samples) throw new UsageError('submit: name at least one image, folder or glob (or --samples FILE)');
  const writes = [a.json, a.csv, a.samplesCsv, a.sampleReport].filter((o): o is string => !!o);
  if (writes.length && !a.wait) throw new UsageError('--json/--csv/--samples-csv/--sample-report need --wait (the results exist once the workers are done)');
  const { files, uncountable, skipped, rbcCount } = await planInputs(a);
  for (const s of skipped.filter((x) => !x.error)) log(c.dim(`note: ${s.path}: ${s.reason}`));
  if (!files.length) throw new UsageError(`no image found in ${[...a.inputs, ...(a.samples ? [a.samples] : [])].join(', ')}`);
  const guard = new OutputGuard(new Set(files.map((f) => resolve(f.path))), a.overwrite);
  await preflight(
    guard,
    writes.filter((w) => w !== '-'),
  );
  const redis = await redisOf(a.redis);
  try {
    // workers on other machines read the same paths: send absolute ones
    const planned = files.map((f) => ({ path: resolve(f.path), sample: f.sample }));
    const settings = { threshold: a.threshold, review: a.review, scale: a.scale ?? 'auto', tta: a.tta, whiteBalance: a.whiteBalance, maxPixels: a.maxPixels };
    let batch: string;
    let ids: string[];
    try {
      ({ batch, ids } = await submit(redis, planned, { settings, inline: a.inline, attempts: a.attempts, fresh: a.fresh }));
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    log(`batch ${batch}: ${planned.length} image(s) queued${a.wait ? '' : `; 'hemocount submit' again with the same inputs and --wait collects the results`}`);
    if (!a.wait) return 0;
    const progress = new Progress(planned.length, a.quiet);
    const abort = new AbortController();
    const interrupt = () => abort.abort();
    process.once('SIGINT', interrupt);
    let got: Awaited<ReturnType<typeof collect>>;
    try {
      got = await collect(redis, ids, planned, { progress: (d) => progress.tick(d, ''), signal: abort.signal });
    } catch (e) {
      if (abort.signal.aborted) {
        log(`interrupted: the jobs stay queued; run the same submit --wait again to collect batch ${batch}`);
        return 130;
      }
      throw e;
    } finally {
      process.off('SIGINT', interrupt);
      progress.done();
    }
    if (got.runs.length > 1) {
      throw new Error(
        `the workers used ${got.runs.length} different models or thresholds (${got.runs.map((r) => `${r.model.name} ${r.model.version} ${r.model.sha256.slice(0, 12)}`).join('; ')}): run one model on every worker, then submit again with --fresh`,
      );
    }
    // report results under the paths the user gave, as a local count does
    const results: ImageResult[] = [
      ...uncountable,
      // collect gives one result per file, in input order
      ...got.results.map((r, i) => ({ ...r, file: files[i]!.path })),
    ];
    const run = got.runs[0];
    // without any counted image, the document names the bundled model; the sample
    // report's pictures use its class colours
    const bundled = !run || a.sampleReport ? await Model.load() : undefined;
    const th = run?.thresholds ?? bundled!.thresholds();
    const doc = countDocument(run?.model ?? bundled!.info, th, results, rbcCount);
    await writeDocument(doc, a, guard, bundled?.metadata);
    return report(doc, a, th) ? 1 : 0;
  } finally {
    redis.disconnect();
  }
}

export async function runStatus(a: { redis?: string; json: boolean }): Promise<number> {
  const redis = await redisOf(a.redis);
  try {
    const s = await queueStatus(redis);
    if (a.json) process.stdout.write(JSON.stringify(s) + '\n');
    else
      process.stdout.write(
        `queue ${s.queue} on ${a.redis}: ${s.waiting} waiting, ${s.active} active, ${s.retrying} to retry, ` +
          `${s.completed} done, ${s.failed} failed; ${s.workers} worker connection(s)\n`,
      );
    return 0;
  } finally {
    redis.disconnect();
  }
}

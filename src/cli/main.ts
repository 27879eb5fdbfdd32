/** The hemocount command line: thin wrappers over the library. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname, constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseScale as parseScaleSpec, scaleModel } from '../core/detect.js';
import { readImagesOnce, removeOwnCopies } from '../adapters/image.js';
import { readMetadata, sha256 } from '../adapters/onnx.js';
import { CLASSES, type ModelMetadata, type PerClass } from '../core/types.js';
import { findTorchPython } from '../adapters/python.js';
import { Model, modelPath } from '../detector.js';
import { OutputGuard } from '../adapters/files.js';
import { preflight, runCount, UsageError } from './count.js';
import type { StudyArgs } from './study.js';
import { c, log } from './ui.js';

const OVERVIEW = `hemocount - find, label and count RBC, WBC and platelets in blood smear images

Usage: hemocount <command> [options]

Commands:
  count <files|folders|globs...>   count cells; write pictures, JSON, CSV, VOC, YOLO, COCO
  evaluate --data DIR|FILE         paper-style tables against annotations (threshold sweep)
  calibrate --data DIR|FILE --out M.onnx  pick per-class thresholds + review band into a new model file
  select --data DIR|FILE M1.onnx M2.onnx...  compare models (e.g. epochs), name the best
  report --data DIR|FILE --out R.html  HTML + Markdown report with plots
  train [args]                     train a model (PyTorch; see 'hemocount train --help')
  export CKPT --out M.onnx         a training checkpoint -> ONNX with hemocount's metadata
  serve [--port 8080] [--host 127.0.0.1]  web app + HTTP API (--max-file-mb, --max-files, --max-megapixels, --max-queued,
                                   --max-inflight-mb, --token SECRET (required beyond loopback; or HEMOCOUNT_TOKEN), --allow-host NAME)
  info [--model M] [--json]        describe a model (its thresholds, calibration, training)
  worker --redis URL               take count jobs from Redis (BullMQ); run any number, on any machines
  submit --redis URL <inputs...>   queue one job per image; --wait collects the same JSON/CSV as count
  status --redis URL               jobs waiting / active / done / failed, and workers connected

`;

const SECTIONS: Record<string, string> = {
  count: `count options:
  --model FILE|fp32     ONNX model (default: the bundled int8 model; fp32: the full-precision network it was built from)
  --threshold SPEC      0.4, or RBC=0.25,WBC=0.65,Platelets=0.35 (default: the model's calibrated ones)
  --review SPEC         lower edge of the review band, same syntax (between it and the threshold: uncertain)
  --out DIR             annotated images (<name>.annotated.png); --no-labels, --no-scores to declutter
  --out-format png|jpg|webp  the annotated images' format (default png)
  --json FILE|-         results as JSON ('-' for stdout)
  --csv FILE|-          one row per image plus a totals row
  --max-megapixels N    refuse larger images (default 250; a 12000 x 9000 smear is 108)
  --jsonl FILE          JSON Lines, one image per line, written as each image finishes
  --resume              with --jsonl: keep the images already there, count the rest
  --voc DIR  --yolo DIR  --coco FILE   detections as Pascal VOC XML / YOLO txt / COCO JSON
  --candidates          include every candidate above the model's floor in the JSON
  --no-recursive        do not descend into sub-folders
  --overwrite           replace existing outputs even if hemocount did not write them (by
                        default only files hemocount wrote, still unchanged, are replaced)
  --quiet               no progress bar or table
  --threads N           onnxruntime threads
  --jobs N              N worker threads, each running the network on its share of the cores
                        (default: one per core; 1 = one network pass at a time on all cores)
  --scale auto|1|F      magnification: auto (default) measures the cells and rescales images
                        whose cells are outside the training range; 1 = off; F = force factor F
  --tta                 test-time augmentation: average over the image and its two flips (about 3x
                        the time; not always better: the model card gives its measured effect)
  --white-balance on|off  make the smear's background grey first (a lamp's colour the camera was
                        not balanced for); default: as the model was trained (\`hemocount info\`;
                        off for the bundled models)

samples (several fields of one smear; see README 'Samples'):
  each sub-folder of a named folder is a sample (slides/patient-A/*.jpg -> sample patient-A)
  --samples FILE        manifest CSV with columns file,sample[,rbc_count] (its images are counted too)
  --sample NAME         the sample of images given directly (not in a sub-folder or the manifest)
  --rbc-count N|A=N,..  analyser red cells per microlitre (e.g. 4.8e6): ratio-method WBC and
                        platelet estimates per microlitre, with intervals
  --samples-csv FILE|-  one row per sample: totals, 95 % intervals, per-field mean/SD, ratios, estimates
  --sample-report FILE  printable sample report, .html (with thumbnails) or .md

`,
  study: `evaluate / calibrate / select / report options:
  --data DIR|FILE       annotated images: VOC XML, YOLO (labels/ + classes.txt) or COCO JSON
  --model FILE|fp32     the model to score (default: the bundled int8 model); select takes models as arguments
  --out FILE            (calibrate) the new model file, required; (report) the report .html, required
  --format voc|yolo|coco  override auto-detection
  --iou 0.5             IoU for matching a detection to a cell
  --criterion f1|accuracy  what 'best' means (default f1; ties go to the other)
  --json FILE|-         machine-readable output
  --min-cells N         (calibrate) annotated cells needed per class (default 10; below 50 it warns)
  --skip-missing        score the readable images when some annotated images are missing or
                        unreadable (default: exit 1, naming them)
  --split NAME          a YOLO set (folder or data.yaml): only labels/NAME/ (e.g. val)
  --subset NAME         only the images of one subset (COCO 'subset' field, e.g. full-field);
                        without it, every subset is also reported on its own
  --scale, --tta, --white-balance  as for count
  --log FILE            (report) a train_log.jsonl for the learning curve
  --overwrite           replace outputs (--out, --json) that hemocount did not write, as for count

`,
  serve: `serve options:
  --port 8080           port (0: any free port)
  --host 127.0.0.1      address to bind; beyond loopback a token is required
  --token SECRET        required from clients (Authorization: Bearer SECRET, or open /?token=SECRET); or HEMOCOUNT_TOKEN
  --allow-host NAME     a Host name to answer besides loopback ones (repeatable)
  --model FILE|fp32     ONNX model (default: the bundled int8 model; fp32: its full-precision network)
  --max-file-mb 15  --max-files 20  --max-megapixels 50  --max-queued 8  --max-inflight-mb 384
  --threads N           onnxruntime threads

`,
  worker: `worker options:
  --redis URL           the Redis server (redis://host:6379); jobs come from its 'hemocount-count' queue
  --concurrency N       images counted at once by this worker (default 1)
  --stall-seconds S     a job whose worker stops answering for S seconds goes to another worker (default 30)
  --model FILE|fp32     ONNX model (default: the bundled int8 model; give every worker the same one)
  --threads N           onnxruntime threads
  --quiet               no line per job

`,
  submit: `submit options (inputs, samples and thresholds as for count):
  --redis URL           the Redis server
  --wait                wait for every image and write the results; Ctrl-C leaves the jobs queued,
                        and the same submit --wait again collects them (nothing is counted twice)
  --json FILE|-  --csv FILE|-  --samples-csv FILE|-  --sample-report FILE   as for count (need --wait)
  --inline              send the image bytes in the job (up to 16 MB each) instead of the path;
                        without it, workers read the paths: give them the same storage
  --attempts N          tries per image before it is reported failed (default 3)
  --fresh               count again images this batch already counted (submitting the same batch
                        again otherwise reuses its results, for 7 days; failed images are always tried again)
  --threshold, --review, --scale, --tta, --max-megapixels, --samples, --sample, --rbc-count,
  --no-recursive, --overwrite, --quiet   as for count

`,
  status: `status options:
  --redis URL           the Redis server
  --json                machine-readable

`,
  info: `info options:
  --model FILE|fp32     the model to describe (default: the bundled int8 model)
  --json                the whole embedded metadata as JSON

`,
};
const EXIT = `Exit status: 0 success, 1 some input failed, 2 usage error.
`;
const HELP = OVERVIEW + Object.values(SECTIONS).join('') + EXIT;

const here = dirname(fileURLToPath(import.meta.url));
const trainingDir = () => join(here, '..', '..', '..', 'training');

async function main(argv: string[]): Promise<number> {
  readImagesOnce();
  const [cmd, ...rest] = argv;
  if (cmd && ['count', 'evaluate', 'calibrate', 'select', 'report'].includes(cmd)) {
    // Ctrl-C while a worker writes a large image's decoded copy: remove it, then stop as the signal would
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(s, () => {
        removeOwnCopies();
        process.kill(process.pid, s);
      });
    }
  }
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP);
    return cmd ? 0 : 2;
  }
  if (cmd === '--version') {
    const pkg = JSON.parse(await readFile(join(here, '..', '..', '..', 'package.json'), 'utf8'));
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  if (cmd === 'train') return train(rest);
  if (cmd === 'export') {
    // export writes like every other command: never over a file hemocount did not write
    const overwrite = rest.includes('--overwrite');
    const args = rest.filter((x) => x !== '--overwrite');
    const at = args.indexOf('--out');
    const out = at >= 0 ? args[at + 1] : undefined;
    const guard = new OutputGuard(new Set(args.filter((x) => x.endsWith('.pt')).map((x) => resolve(x))), overwrite);
    if (out) await preflight(guard, [out]);
    const code = await train(['export', ...args]);
    if (code === 0 && out && existsSync(out)) await guard.adopt(out);
    return code;
  }
  const common = {
    model: { type: 'string' },
    json: { type: 'string' },
    quiet: { type: 'boolean', default: false },
    threads: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
    scale: { type: 'string', default: 'auto' },
    tta: { type: 'boolean', default: false },
    'white-balance': { type: 'string' },
  } as const;
  const study = {
    ...common,
    data: { type: 'string' },
    format: { type: 'string' },
    iou: { type: 'string', default: '0.5' },
    criterion: { type: 'string', default: 'f1' },
    out: { type: 'string' },
    log: { type: 'string' },
    subset: { type: 'string' },
    split: { type: 'string' },
    'skip-missing': { type: 'boolean', default: false },
    'min-cells': { type: 'string' },
    overwrite: { type: 'boolean', default: false },
  } as const;
  const threads = (v?: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`--threads must be a whole number >= 1, not '${v}'`);
    return Number(v);
  };
  const whole = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`${name} must be a whole number >= 1, not '${v}'`);
    return Number(v);
  };
  const whiteBalance = (v: string | undefined) => {
    if (v === undefined) return undefined;
    if (v !== 'on' && v !== 'off') throw new UsageError(`--white-balance must be on or off, not '${v}'`);
    return v === 'on';
  };
  const outFormat = (v: string) => {
    if (v === 'jpeg') return 'jpg'; // the library's name for it
    if (v !== 'png' && v !== 'jpg' && v !== 'webp') throw new UsageError(`--out-format must be png, jpg or webp, not '${v}'`);
    return v;
  };
  const studyArgs = (v: Record<string, unknown>): StudyArgs => {
    const crit = v.criterion as string;
    if (crit !== 'f1' && crit !== 'accuracy') throw new UsageError(`--criterion must be f1 or accuracy, not '${crit}'`);
    const iou = Number(v.iou);
    if (!(iou > 0 && iou < 1)) throw new UsageError(`--iou must be between 0 and 1`);
    if (v.format && !['voc', 'yolo', 'coco'].includes(v.format as string)) throw new UsageError('--format must be voc, yolo or coco');
    return {
      data: v.data as string,
      format: v.format as StudyArgs['format'],
      model: v.model as string,
      iou,
      criterion: crit,
      json: v.json as string,
      quiet: v.quiet as boolean,
      threads: threads(v.threads as string),
      subset: v.subset as string | undefined,
      split: v.split as string | undefined,
      scale: parseScale(v.scale as string),
      tta: v.tta as boolean,
      whiteBalance: whiteBalance(v['white-balance'] as string | undefined),
      skipMissing: v['skip-missing'] as boolean,
      overwrite: v.overwrite as boolean,
    };
  };
  switch (cmd) {
    case 'count': {
      const { values: v, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          ...common,
          threshold: { type: 'string' },
          review: { type: 'string' },
          out: { type: 'string' },
          csv: { type: 'string' },
          voc: { type: 'string' },
          yolo: { type: 'string' },
          coco: { type: 'string' },
          candidates: { type: 'boolean', default: false },
          'no-recursive': { type: 'boolean', default: false },
          overwrite: { type: 'boolean', default: false },
          jsonl: { type: 'string' },
          resume: { type: 'boolean', default: false },
          'max-megapixels': { type: 'string', default: '250' },
          'no-labels': { type: 'boolean', default: false },
          'out-format': { type: 'string', default: 'png' },
          jobs: { type: 'string' },
          'no-scores': { type: 'boolean', default: false },
          samples: { type: 'string' },
          sample: { type: 'string' },
          'rbc-count': { type: 'string' },
          'samples-csv': { type: 'string' },
          'sample-report': { type: 'string' },
        },
      });
      const maxMp = Number(v['max-megapixels']);
      if (!(maxMp > 0)) throw new UsageError(`--max-megapixels must be a positive number, not '${v['max-megapixels']}'`);
      if (v.help) return usage(0, 'count');
      return runCount({
        inputs: positionals,
        model: v.model,
        threshold: v.threshold,
        review: v.review,
        out: v.out,
        json: v.json,
        csv: v.csv,
        voc: v.voc,
        yolo: v.yolo,
        coco: v.coco,
        candidates: v.candidates,
        recursive: !v['no-recursive'],
        overwrite: v.overwrite,
        jsonl: v.jsonl,
        resume: v.resume,
        maxPixels: maxMp * 1e6,
        noLabels: v['no-labels'],
        outFormat: outFormat(v['out-format']),
        jobs: whole(v.jobs, '--jobs'),
        noScores: v['no-scores'],
        samples: v.samples,
        sample: v.sample,
        rbcCount: v['rbc-count'],
        samplesCsv: v['samples-csv'],
        sampleReport: v['sample-report'],
        quiet: v.quiet,
        threads: threads(v.threads),
        scale: parseScale(v.scale),
        tta: v.tta,
        whiteBalance: whiteBalance(v['white-balance']),
      });
    }
    case 'worker': {
      const { values: v } = parseArgs({
        args: rest,
        options: { ...common, redis: { type: 'string' }, concurrency: { type: 'string' }, 'stall-seconds': { type: 'string' } },
      });
      if (v.help) return usage(0, 'worker');
      const { runWorker } = await import('./queue.js');
      return runWorker({
        redis: v.redis,
        model: v.model,
        concurrency: whole(v.concurrency, '--concurrency'),
        threads: threads(v.threads),
        stallSeconds: whole(v['stall-seconds'], '--stall-seconds'),
        quiet: v.quiet,
      });
    }
    case 'submit': {
      const { values: v, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          ...common,
          redis: { type: 'string' },
          wait: { type: 'boolean', default: false },
          inline: { type: 'boolean', default: false },
          fresh: { type: 'boolean', default: false },
          attempts: { type: 'string' },
          threshold: { type: 'string' },
          review: { type: 'string' },
          csv: { type: 'string' },
          'no-recursive': { type: 'boolean', default: false },
          overwrite: { type: 'boolean', default: false },
          'max-megapixels': { type: 'string', default: '250' },
          samples: { type: 'string' },
          sample: { type: 'string' },
          'rbc-count': { type: 'string' },
          'samples-csv': { type: 'string' },
          'sample-report': { type: 'string' },
        },
      });
      if (v.help) return usage(0, 'submit');
      const maxMp = Number(v['max-megapixels']);
      if (!(maxMp > 0)) throw new UsageError(`--max-megapixels must be a positive number, not '${v['max-megapixels']}'`);
      const { runSubmit } = await import('./queue.js');
      return runSubmit({
        inputs: positionals,
        redis: v.redis,
        wait: v.wait,
        inline: v.inline,
        fresh: v.fresh,
        attempts: whole(v.attempts, '--attempts'),
        threshold: v.threshold,
        review: v.review,
        json: v.json,
        csv: v.csv,
        samplesCsv: v['samples-csv'],
        sampleReport: v['sample-report'],
        recursive: !v['no-recursive'],
        overwrite: v.overwrite,
        maxPixels: maxMp * 1e6,
        samples: v.samples,
        sample: v.sample,
        rbcCount: v['rbc-count'],
        scale: parseScale(v.scale),
        tta: v.tta,
        whiteBalance: whiteBalance(v['white-balance']),
        quiet: v.quiet,
      });
    }
    case 'status': {
      const { values: v } = parseArgs({ args: rest, options: { help: common.help, redis: { type: 'string' }, json: { type: 'boolean', default: false } } });
      if (v.help) return usage(0, 'status');
      const { runStatus } = await import('./queue.js');
      return runStatus({ redis: v.redis, json: v.json });
    }
    case 'evaluate':
    case 'calibrate':
    case 'report': {
      const { values: v } = parseArgs({ args: rest, options: study });
      if (v.help) return usage(0, cmd);
      const a = studyArgs(v);
      const { runCalibrate, runEvaluate, runReport } = await import('./study.js');
      if (cmd === 'evaluate') return runEvaluate(a);
      if (cmd === 'calibrate') {
        const minCells = v['min-cells'] === undefined ? undefined : Number(v['min-cells']);
        if (minCells !== undefined && !(Number.isInteger(minCells) && minCells >= 1))
          throw new UsageError(`--min-cells must be a whole number >= 1, not '${v['min-cells']}'`);
        return runCalibrate({ ...a, out: v.out, minCells });
      }
      return runReport({ ...a, out: v.out, log: v.log });
    }
    case 'select': {
      const { values: v, positionals } = parseArgs({ args: rest, allowPositionals: true, options: study });
      if (v.help) return usage(0, 'select');
      const { runSelect } = await import('./study.js');
      return runSelect({ ...studyArgs(v), models: positionals });
    }
    case 'info': {
      const { values: v } = parseArgs({
        args: rest,
        options: { model: { type: 'string' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } },
      });
      if (v.help) return usage(0, 'info');
      const path = modelPath(v.model);
      const bytes = await readFile(path).catch((e) => {
        throw new Error(`${path}: cannot read the model file (${e.code ?? e.message})`);
      });
      const meta = readMetadata(new Uint8Array(bytes), path);
      process.stdout.write(v.json ? JSON.stringify(meta, null, 2) + '\n' : describeModel(path, meta, bytes.length, sha256(new Uint8Array(bytes))));
      return 0;
    }
    case 'serve': {
      const { values: v } = parseArgs({
        args: rest,
        options: {
          model: { type: 'string' },
          port: { type: 'string', default: '8080' },
          host: { type: 'string', default: '127.0.0.1' },
          threads: { type: 'string' },
          'max-file-mb': { type: 'string' },
          'max-files': { type: 'string' },
          'max-megapixels': { type: 'string' },
          'max-queued': { type: 'string' },
          token: { type: 'string' },
          'allow-host': { type: 'string', multiple: true },
          'max-inflight-mb': { type: 'string' },
          help: { type: 'boolean', short: 'h', default: false },
        },
      });
      if (v.help) return usage(0, 'serve');
      const port = Number(v.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0-65535, not '${v.port}'`);
      const { buildServer, isLoopback } = await import('../server/app.js');
      const token = v.token ?? process.env.HEMOCOUNT_TOKEN;
      if (!isLoopback(v.host!) && !token) {
        throw new UsageError(`binding to ${v.host} lets other machines use this server: give --token SECRET (or set HEMOCOUNT_TOKEN)`);
      }
      const model = await Model.load(v.model, { threads: threads(v.threads) });
      const num = (x?: string, k = 1) => (x ? Number(x) * k : undefined);
      const app = await buildServer({
        model,
        maxFileBytes: num(v['max-file-mb'], 1024 * 1024),
        maxFiles: num(v['max-files']),
        maxPixels: num(v['max-megapixels'], 1e6),
        maxQueued: num(v['max-queued']),
        maxInFlightBytes: num(v['max-inflight-mb'], 1024 * 1024),
        token,
        allowHosts: [...(v['allow-host'] ?? []), ...(isLoopback(v.host!) ? [] : [v.host!])],
      });
      const addr = await app.listen({ port, host: v.host });
      log(`hemocount serving ${model.info.name} at ${addr}  (API: ${addr}/api/openapi.json)`);
      // bound to every interface: other machines reach it by a name, which the Host check must know
      if (['0.0.0.0', '::', '[::]'].includes(v.host!) && !v['allow-host']?.length)
        log(
          `listening on all interfaces (${v.host}), but answering only requests addressed to loopback names: add --allow-host NAME for each name or address clients use (e.g. --allow-host ${hostname()})`,
        );
      const stop = () => app.close().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      return new Promise<number>(() => {}); // runs until stopped
    }
    default:
      throw new UsageError(`unknown command '${cmd}' (try 'hemocount --help')`);
  }
}

function parseScale(v: string): 'auto' | number {
  try {
    return parseScaleSpec(v);
  } catch (e) {
    throw new UsageError(`--${(e as Error).message}`);
  }
}

/** `hemocount info`: what a person wants to know about a model file. */
function describeModel(path: string, m: ModelMetadata, size: number, sha: string): string {
  const p = m.provenance as Record<string, unknown>;
  const cal = m.calibration as { data?: string; network?: string; images?: number; criterion?: string; classes?: PerClass<{ f1: number | null }> } | undefined;
  const band = scaleModel(m); // the model's band, or the defaults it falls back on
  const lines = [
    // the file's hash tells apart two releases or calibrations that share a name and a date
    `${m.name} ${m.version} sha256 ${sha.slice(0, 12)}  (${path}, ${(size / 1e6).toFixed(1)} MB, format ${m.format})`,
    `architecture: ${p.arch ?? '?'}, ${Number(p.parameters ?? 0).toLocaleString('en')} parameters; trained ${p.epochs ?? '?'} epoch${p.epochs === 1 ? '' : 's'}${p.init ? ` from ${String(p.init)}` : ''}`,
    `classes:      ${CLASSES.map((k) => `${k} threshold ${m.thresholds[k].toFixed(2)} (review from ${(m.review?.[k] ?? m.thresholds[k]).toFixed(2)})`).join('; ')}`,
    cal
      ? `calibrated:   on ${cal.images} images of ${cal.data} (criterion ${cal.criterion}); F1 there ${CLASSES.map((k) => `${k} ${cal.classes?.[k]?.f1 == null ? '-' : (100 * cal.classes[k].f1!).toFixed(1)} %`).join(', ')}${
          // an int8 model carries the calibration of the fp32 network it was quantised from
          m.name.endsWith('-int8') && cal.network !== m.name ? ' (of the fp32 network; int8 loses no more than 0.5 points, docs/validation/int8-gate.txt)' : ''
        }`
      : "calibrated:   no (the paper's thresholds)",
    `magnification: --scale auto keeps red cells of ${band.min_px}-${band.max_px} px, rescales others to ${band.reference_px} px`,
    `input:        RGB, native resolution, padded to a multiple of ${m.input.pad_multiple}; NMS IoU ${m.postprocess.nms_iou}`,
    `white balance: ${m.input.white_balance ? 'on by default (the background made grey; --white-balance off to skip)' : 'off by default (--white-balance on for smears whose background is tinted)'}`,
    '(--json for the whole metadata)',
  ];
  return lines.join('\n') + '\n';
}

/** `hemocount CMD --help`: that command's options only. */
function usage(code: number, cmd?: string): number {
  const key = cmd && ['evaluate', 'calibrate', 'select', 'report'].includes(cmd) ? 'study' : cmd;
  process.stdout.write(key && SECTIONS[key] ? `Usage: hemocount ${cmd} ...\n\n${SECTIONS[key]}${EXIT}` : HELP);
  return code;
}

/** Delegates to the Python training module with an interpreter that can import torch. */
async function train(args: string[]): Promise<number> {
  const { python, torch, onnx } = findTorchPython();
  const sub = args[0] && !args[0].startsWith('-') ? args : ['train', ...args];
  if (args.includes('--help') || args.includes('-h')) log(c.dim(`(using ${python}, torch ${torch})`));
  const needsOnnx = sub[0] === 'export' ? 'export' : args.includes('--patience') ? '--patience' : args.some((a) => a.endsWith('.onnx')) ? 'an ONNX file' : null;
  if (needsOnnx && !onnx) throw new Error(`${python} has torch but not the onnx package, which ${needsOnnx} needs: apt-get install python3-onnx`);
  return new Promise((res) => {
    const p = spawn(python, ['-m', 'hemocount_train', ...sub], {
      stdio: 'inherit',
      cwd: process.cwd(),
      // HEMOCOUNT_NODE: --patience scores each epoch with this same Node and hemocount CLI
      env: {
        ...process.env,
        HEMOCOUNT_NODE: process.env.HEMOCOUNT_NODE ?? process.execPath,
        PYTHONPATH: [trainingDir(), process.env.PYTHONPATH].filter(Boolean).join(':'),
      },
    });
    // a killed hemocount stops its training too (one trainer per run folder)
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const forward = (s: NodeJS.Signals) => p.kill(s);
    for (const s of signals) process.on(s, forward);
    p.on('exit', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      res(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1));
    });
  });
}

// A reader that stops early (`count --json - | head`) closes the pipe: what is left for stdout is
// dropped and the command finishes its other outputs, instead of dying with a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      // Node's own wording for an unknown option ends in advice about '--' with an unbalanced quote
      const unknown = /^Unknown option '([^']+)'/.exec((e as Error).message);
      // options are parsed per command, so the first argument is the command that refused it
      const cmd = process.argv[2];
      log(`hemocount: ${unknown ? `unknown option '${unknown[1]}' (hemocount ${cmd ? `${cmd} ` : ''}--help lists the options)` : (e as Error).message}`);
      process.exitCode = 2;
    } else {
      log(`${c.red('hemocount:')} ${(e as Error).message}`);
      process.exitCode = 1;
    }
  },
);

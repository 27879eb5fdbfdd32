/**
 * hemocount serve: the HTTP API and the web app over the same library.
 * Limits answer with JSON errors; inference goes through a bounded queue.
 */
import { parseScale } from '../core/detect.js';
import { megapixels } from '../core/pipeline.js';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlibConstants, gzip } from 'node:zlib';
import multipart from '@fastify/multipart';
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { type CountDocument, countDocument, failedResult, type ImageResult } from '../core/formats.js';
import type { ModelMetadata } from '../core/types.js';
import { probe, sniffImageType } from '../adapters/image.js';
import { readMetadata, sha256 } from '../adapters/onnx.js';
import { defaultModelPath, type Model } from '../detector.js';
import { openapi } from './openapi.js';
import { InferenceQueue, QueueFullError } from './queue.js';

export interface ServerOptions {
  model: Model;
  maxFileBytes?: number;
  maxFiles?: number;
  maxPixels?: number;
  concurrency?: number;
  maxQueued?: number;
  /** Upload bytes all requests may hold in memory at once. */
  maxInFlightBytes?: number;
  /** Pixels all images of one request may hold together (one request cannot hold the slot for long). */
  maxRequestPixels?: number;
  logger?: boolean;
  /** Host names (Host header, without port) served besides loopback ones: a DNS-rebinding guard. */
  allowHosts?: string[];
  /** Required as `Authorization: Bearer TOKEN` (or the cookie set by `/?token=TOKEN`) when given. */
  token?: string;
  /**
   * The model private mode runs in the browser when the server runs the bundled fp32 model
   * (`--model fp32`): that model ('fp32', the default) or the bundled int8 one. Any other
   * model, the bundled int8 default included, is served as it is.
   */
  browserPrecision?: 'fp32' | 'int8';
}

/** Loopback names and addresses: the only Host headers a default server answers. */
export const LOOPBACK = ['localhost', '127.0.0.1', '::1', '[::1]'];
export const isLoopback = (host: string) => LOOPBACK.includes(host) || /^127\./.test(host);

export const DEFAULT_LIMITS = {
  maxFileBytes: 15 * 1024 * 1024,
  maxFiles: 20,
  maxPixels: 50_000_000,
  maxRequestPixels: 100_000_000,
  concurrency: 1,
  maxQueued: 8,
  maxInFlightBytes: 384 * 1024 * 1024,
};

const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; " +
  "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const here = dirname(fileURLToPath(import.meta.url));
const root = [join(here, '..', '..'), join(here, '..', '..', '..')].find((p) => existsSync(join(p, 'package.json')))!;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly file?: string,
  ) {
    super(message);
  }
}

export async function buildServer(o: ServerOptions): Promise<FastifyInstance> {
  const lim = { ...DEFAULT_LIMITS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as typeof DEFAULT_LIMITS & ServerOptions;
  const model = o.model;
  const queue = new InferenceQueue(lim.concurrency, lim.maxQueued);
  const inFlight = { bytes: 0 };
  // slow bodies and idle connections are cut off rather than held open
  const app = Fastify({
    logger: o.logger ?? false,
    bodyLimit: lim.maxFileBytes * lim.maxFiles + 1024 * 1024,
    connectionTimeout: 120_000,
    requestTimeout: 120_000,
  });
  // only multipart bodies are read at all: anything else is refused (415) before its bytes are
  app.removeAllContentTypeParsers();
  // files past maxFiles are read and refused after the body (a mid-body refusal closes the
  // connection, and a client still sending may see a reset instead of the answer); past four
  // times that, multipart's own limit ends the request at once
  await app.register(multipart, { limits: { fileSize: lim.maxFileBytes, files: 4 * lim.maxFiles, fields: 10, fieldSize: 10_000 }, throwFileSizeLimit: true });
  const allowed = new Set([...LOOPBACK, ...(o.allowHosts ?? [])].map((h) => h.toLowerCase()));

  app.addHook('onRequest', async (req, reply) => {
    // DNS rebinding: a page on evil.example resolving to this machine sends Host: evil.example
    const host = hostName(req);
    if (!allowed.has(host) && !isLoopback(host))
      return sendError(reply, 421, `host '${host}' is not served here (allowed: ${[...allowed].join(', ')}; see --allow-host)`);
    // cross-site requests (another page posting to this server) are refused
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    if (req.method !== 'GET' && req.method !== 'HEAD' && (site === 'cross-site' || (origin && hostOf(origin) !== (req.headers.host ?? '').toLowerCase()))) {
      return sendError(reply, 403, 'cross-origin requests are not accepted');
    }
    if (o.token) {
      const url = new URL(req.url, 'http://x');
      if (req.method === 'GET' && url.pathname === '/' && url.searchParams.get('token') === o.token) {
        // the web app's link: keep the token in a same-site cookie, then drop it from the address bar
        return reply.header('Set-Cookie', `hemocount_token=${encodeURIComponent(o.token)}; HttpOnly; SameSite=Strict; Path=/`).redirect('/');
      }
      const cookie = /(?:^|;\s*)hemocount_token=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
      const given = req.headers.authorization?.replace(/^Bearer\s+/i, '') ?? (cookie ? decodeURIComponent(cookie) : undefined);
      if (given !== o.token && url.pathname !== '/healthz')
        return sendError(reply, 401, 'a token is required: Authorization: Bearer TOKEN, or open /?token=TOKEN');
    }
  });

  app.addHook('onSend', async (req, reply) => {
    // the web build names its scripts and styles by their content: they never change under a name
    if (req.url.startsWith('/assets/') && reply.statusCode === 200) reply.header('cache-control', IMMUTABLE);
    // threaded WebAssembly (private mode) needs a cross-origin isolated page
    reply.header('Cross-Origin-Opener-Policy', 'same-origin');
    reply.header('Cross-Origin-Embedder-Policy', 'require-corp');
    reply.header('Cross-Origin-Resource-Policy', 'same-origin');
    reply.header('Content-Security-Policy', CSP);
    reply.header('X-Content-Type-Options', 'nosniff');
    reply.header('Referrer-Policy', 'no-referrer');
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof HttpError) return sendError(reply, err.status, err.message, err.file);
    if (err instanceof QueueFullError) return reply.header('Retry-After', '2').code(503).send({ error: err.message, status: 503 });
    if (err.code === 'FST_REQ_FILE_TOO_LARGE') return sendError(reply, 413, `a file is larger than the ${mb(lim.maxFileBytes)} limit`);
    if (err.code === 'FST_FILES_LIMIT') return sendError(reply, 413, `too many files: at most ${lim.maxFiles} per request`);
    if (err.code === 'FST_INVALID_MULTIPART_CONTENT_TYPE' || err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
      return sendError(reply, 415, 'send images as multipart/form-data in a field named "images"');
    if (/multipart|boundary|Unexpected end of form|Malformed part header/i.test(err.message))
      return sendError(reply, 400, `malformed multipart body (${err.message})`);
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    return sendError(reply, status, status === 500 ? `internal error: ${err.message}` : err.message);
  });

  app.setNotFoundHandler((req, reply) => sendError(reply, 404, `no such endpoint: ${req.method} ${req.url.split('?')[0]}`));
  app.get('/healthz', async () => ({ ok: true, model: model.info, queue: queue.size, rssMB: Math.round(process.memoryUsage().rss / 1048576) }));
  // the model files private mode may download: the server's own, and the bundled int8 model
  // (the server's own when it runs that one, the default)
  const own = new Asset(() => Promise.resolve(Buffer.from(model.bytes.buffer, model.bytes.byteOffset, model.bytes.byteLength)), ONNX, model.info.sha256);
  const int8 = bundled(model, 'int8') ? own : bundled(model, 'fp32') ? twin() : undefined;
  const browserModel = o.browserPrecision === 'int8' && int8 ? { asset: int8, precision: 'int8' } : { asset: own, precision: 'server' };
  // what the browser's model takes: the int8 model's input is the 8-bit image, fp32's a float tensor
  let browserInput: Promise<ModelMetadata['input']> | undefined;
  const inputOfBrowserModel = () =>
    (browserInput ??=
      browserModel.asset === own ? Promise.resolve(model.metadata.input) : browserModel.asset.read().then((b) => readMetadata(new Uint8Array(b)).input));
  const web = join(root, 'web', 'dist');
  const hasWeb = existsSync(web);
  // onnxruntime-web, wherever npm put it (hoisted when hemocount is itself a dependency)
  const ortDist = dirname(createRequire(import.meta.url).resolve('onnxruntime-web'));
  const ortAssets = new Map(
    hasWeb ? ORT_FILES.map((f) => [f, new Asset(() => readFile(join(ortDist, f)), f.endsWith('.wasm') ? 'application/wasm' : 'text/javascript')]) : [],
  );

  app.get('/api/model', async (req) => {
    // the web app's first request (a browser's fetch): what private mode would download is compressed meanwhile
    const enc = encodingFor(req);
    if (req.headers['sec-fetch-site'] === 'same-origin' && enc !== 'identity') for (const a of [browserModel.asset, ...ortAssets.values()]) a.prepare(enc);
    return {
      ...model.info,
      metadata: model.metadata,
      limits: { maxFileBytes: lim.maxFileBytes, maxFiles: lim.maxFiles, maxPixels: lim.maxPixels, concurrency: lim.concurrency, maxQueued: lim.maxQueued },
      // what private mode runs: a content-addressed URL (cached for good); 'server': the model this server runs
      browser: { model: `/api/models/${await browserModel.asset.sha256()}.onnx`, precision: browserModel.precision, input: await inputOfBrowserModel() },
    };
  });
  app.get('/api/openapi.json', async () => openapi(lim));
  // the model file (for private mode in the browser); ?precision=int8: the bundled int8 model
  app.get('/api/model.onnx', async (req, reply) => {
    const { precision } = req.query as Record<string, string | undefined>;
    if (precision !== undefined && precision !== 'int8') throw new HttpError(400, `precision: int8 or none (the server's model), not '${precision}'`);
    const asset = precision === 'int8' ? int8 : own;
    if (!asset) throw new HttpError(404, 'no int8 model here: only the bundled model has an int8 version');
    return asset.send(req, reply, 'no-cache');
  });
  app.get('/api/models/:file', async (req, reply) => {
    const { file } = req.params as { file: string };
    for (const asset of int8 && int8 !== own ? [own, int8] : [own]) if (file === `${await asset.sha256()}.onnx`) return asset.send(req, reply, IMMUTABLE);
    throw new HttpError(404, `no model ${file} here`);
  });

  app.post('/api/count', async (req, reply) => {
    if (!req.isMultipart()) throw new HttpError(415, 'send images as multipart/form-data in a field named "images"');
    // a full queue answers before the upload is read, not after
    if (queue.full) throw new QueueFullError('the server is busy: too many counts queued');
    const files: { name: string; bytes: Buffer }[] = [];
    const fields: Record<string, string> = {};
    // uploads are buffered, so the bytes all requests hold at once are budgeted while streaming
    let held = 0;
    try {
      // a misspelt field is refused, not ignored: the client must learn its option was not taken;
      // refused once the body is read, so that the connection can carry the client's next request
      let refusal: HttpError | null = null;
      for await (const part of req.parts()) {
        if (part.type !== 'file') {
          if (FORM_FIELDS.includes(part.fieldname)) fields[part.fieldname] = String(part.value);
          else
            refusal ??= new HttpError(400, `unknown field '${part.fieldname}' (fields: images, ${FORM_FIELDS.join(', ')}; the model is the server's, --model)`);
          continue;
        }
        if (part.fieldname !== 'images' || refusal || files.length >= lim.maxFiles) {
          refusal ??=
            part.fieldname !== 'images'
              ? new HttpError(400, `${part.filename || 'a file'}: send images in the field "images", not "${part.fieldname}"`, part.filename)
              : new HttpError(413, `too many files: at most ${lim.maxFiles} per request`);
          for await (const _ of part.file as AsyncIterable<Buffer>); // read past it, unkept
          continue;
        }
        const chunks: Buffer[] = [];
        const tooLarge = () => new HttpError(413, `${part.filename || 'a file'}: larger than the ${mb(lim.maxFileBytes)} limit`, part.filename);
        try {
          for await (const chunk of part.file as AsyncIterable<Buffer>) {
            if (inFlight.bytes + chunk.length > lim.maxInFlightBytes)
              throw new QueueFullError(`the server is busy: uploads in progress hold ${mb(lim.maxInFlightBytes)}`);
            inFlight.bytes += chunk.length;
            held += chunk.length;
            chunks.push(chunk);
          }
        } catch (e) {
          throw (e as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE' ? tooLarge() : e;
        }
        if (part.file.truncated) throw tooLarge();
        files.push({ name: part.filename || `image${files.length + 1}`, bytes: Buffer.concat(chunks) });
      }
      if (refusal) throw refusal;
    } catch (e) {
      inFlight.bytes -= held;
      // refused before the whole body was read (a full server, a file too large): the rest of it
      // would be taken for the next request on this connection, so the connection ends here
      if (!req.raw.complete) reply.header('connection', 'close');
      throw e;
    }
    // the count below holds the decoded images, not these buffers' budget: release it after;
    // a client gone before its answer (a closed tab, a timeout) has its count stopped, waiting or running
    const gone = new AbortController();
    reply.raw.once('close', () => {
      inFlight.bytes -= held;
      if (!reply.raw.writableEnded) gone.abort(new Error('the client closed the connection'));
    });
    if (req.raw.socket.destroyed) gone.abort(new Error('the client closed the connection'));
    if (!files.length) throw new HttpError(400, 'no image in the request (multipart field "images")');
    let th: ReturnType<Model['thresholds']>;
    try {
      th = model.thresholds(fields.thresholds || undefined, fields.review || undefined);
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    let scale: 'auto' | number;
    try {
      scale = parseScale(fields.scale ?? 'auto');
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    // an unknown value is refused, not read as 'off': a client that thinks it asked for flips must learn otherwise
    if (fields.tta !== undefined && !['true', '1', 'false', '0', ''].includes(fields.tta))
      throw new HttpError(400, `tta must be true or false, not '${fields.tta}'`);
    const tta = fields.tta === 'true' || fields.tta === '1';
    const wb = fields.white_balance || undefined; // empty: as the model was trained
    if (wb !== undefined && !['true', '1', 'false', '0'].includes(wb)) throw new HttpError(400, `white_balance must be true or false, not '${wb}'`);
    // absent: as the model was trained
    const whiteBalance = wb === undefined ? undefined : wb === 'true' || wb === '1';
    // check every file before any inference: type by bytes, size in pixels
    let pixels = 0;
    for (const f of files) {
      if (!f.bytes.length) throw new HttpError(400, `${f.name}: empty file (0 bytes)`, f.name);
      const type = sniffImageType(f.bytes);
      if (!type) throw new HttpError(415, `${f.name}: not an image (JPEG, PNG, TIFF, WebP, GIF or AVIF by its content)`, f.name);
      const { width, height } = await probe(f.bytes).catch((e) => {
        throw new HttpError(422, (e as Error).message.replace(/^image: /, `${f.name}: `), f.name);
      });
      if (width * height > lim.maxPixels)
        throw new HttpError(
          413,
          `${f.name}: ${width}x${height} is ${megapixels(width * height)} megapixels; the limit is ${megapixels(lim.maxPixels)}`,
          f.name,
        );
      pixels += width * height;
      if (pixels > lim.maxRequestPixels)
        throw new HttpError(
          413,
          `the images of this request hold more than ${lim.maxRequestPixels / 1e6} megapixels together; send them in several requests`,
          f.name,
        );
    }
    const images: ImageResult[] = await queue.run(gone.signal, async () => {
      const out: ImageResult[] = [];
      for (const f of files) {
        try {
          const r = await model.count(f.bytes, {
            thresholds: th.count,
            review: th.review,
            candidates: true,
            name: f.name,
            scale,
            tta,
            whiteBalance,
            signal: gone.signal,
          });
          out.push(r);
        } catch (e) {
          if (gone.signal.aborted) throw e; // nobody to tell
          out.push(failedResult(f.name, (e as Error).message.replace(/^image: /, '')));
        }
      }
      return out;
    });
    const doc: CountDocument & { mode: string } = { ...countDocument(model.info, th, images), mode: 'server' };
    return doc;
  });

  if (hasWeb) {
    await app.register(fastifyStatic, { root: web, prefix: '/', index: 'index.html' });
    // the files private mode loads from memory, compressed, revalidated by ETag; the rest as files
    for (const [f, asset] of ortAssets) app.get(`/ort/${f}`, (req, reply) => asset.send(req, reply, 'no-cache'));
    await app.register(fastifyStatic, { root: ortDist, prefix: '/ort/', decorateReply: false });
  } else {
    app.get('/', async (_req, reply) => reply.type('text/plain').send('hemocount API is running; the web app is not built (npm run build).\n'));
  }
  return app;
}

/** The host of an Origin header; an opaque or malformed origin ('null') matches no host. */
function hostOf(origin: string): string | null {
  try {
    return new URL(origin).host.toLowerCase();
  } catch {
    return null;
  }
}

/** The form fields /api/count reads besides the images. */
const FORM_FIELDS = ['thresholds', 'review', 'scale', 'tta', 'white_balance'];

const mb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MB`;

const ONNX = 'application/octet-stream';
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** What private mode loads from onnxruntime-web (its wasm-only build, SIMD and threads). */
export const ORT_FILES = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];

/** Whether a model is the bundled one of that precision. */
function bundled(model: Model, precision: 'fp32' | 'int8'): boolean {
  try {
    return model.path === defaultModelPath(precision);
  } catch {
    return false;
  }
}

/** The bundled int8 model, where this installation has it. */
function twin(): Asset | undefined {
  try {
    const path = defaultModelPath('int8');
    return new Asset(() => readFile(path), ONNX);
  } catch {
    return undefined;
  }
}

type Encoding = 'br' | 'gzip' | 'identity';

/** The best encoding an Accept-Encoding header takes: brotli, then gzip, else none. */
function negotiate(header: string | string[] | undefined): Encoding {
  const q = new Map<string, number>();
  for (const part of String(header ?? '').split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const qv = params.map((p) => /^\s*q=([\d.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
    if (name) q.set(name, qv === undefined ? 1 : Number(qv));
  }
  const ok = (e: string) => (q.get(e) ?? q.get('*') ?? 0) > 0;
  return ok('br') ? 'br' : ok('gzip') ? 'gzip' : 'identity';
}

/**
 * The encoding to send a client: none to a browser on this machine (a loopback Host), where
 * moving the bytes costs next to nothing and decompressing does not (no consistent gain on
 * loopback in bench/browser.ts; fetching and compiling the wasm alone took ~0.1 s longer with
 * brotli); else the best it accepts. A reverse proxy that connects with a loopback Host can
 * compress itself.
 */
function encodingFor(req: FastifyRequest): Encoding {
  return isLoopback(hostName(req)) ? 'identity' : negotiate(req.headers['accept-encoding']);
}

/** The Host header's name, lower case, without its port. */
function hostName(req: FastifyRequest): string {
  return (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '');
}

const compressors: Record<Exclude<Encoding, 'identity'>, (b: Buffer) => Promise<Buffer>> = {
  // made once per asset: brotli's quality 5 is 20 % smaller than gzip on the wasm for 0.5 s, once
  br: (b) => promisify(brotliCompress)(b, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 5, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: b.length } }),
  gzip: (b) => promisify(gzip)(b, { level: 9 }),
};

/**
 * A file served from memory with a strong ETag (its sha256) and its compressed forms, each
 * made once in the background on first need: until one is ready the bytes go as they are,
 * so compression never delays a response.
 */
class Asset {
  private bytes: Promise<Buffer> | null = null;
  private hash: Promise<string> | null = null;
  private readonly encoded = new Map<Encoding, Buffer | null>();

  constructor(
    private readonly load: () => Promise<Buffer>,
    private readonly type: string,
    sha256?: string,
  ) {
    if (sha256) this.hash = Promise.resolve(sha256);
  }

  private body(): Promise<Buffer> {
    this.bytes ??= this.load().catch((e) => {
      this.bytes = null;
      throw e;
    });
    return this.bytes;
  }

  sha256(): Promise<string> {
    this.hash ??= this.body().then(sha256);
    return this.hash;
  }

  read(): Promise<Buffer> {
    return this.body();
  }

  /** Start making the `enc` form (once); null marks one that is being made or did not pay. */
  prepare(enc: Exclude<Encoding, 'identity'>): void {
    if (this.encoded.has(enc)) return;
    this.encoded.set(enc, null);
    this.body()
      .then(async (b) => {
        const z = await compressors[enc](b);
        // a form that saves less than 2 % is not worth the client's decompression
        if (z.length < b.length * 0.98) this.encoded.set(enc, z);
      })
      .catch(() => {});
  }

  async send(req: FastifyRequest, reply: FastifyReply, cacheControl: string) {
    const body = await this.body();
    const tag = (await this.sha256()).slice(0, 32);
    const wanted = encodingFor(req);
    if (wanted !== 'identity') this.prepare(wanted);
    const z = wanted === 'identity' ? null : (this.encoded.get(wanted) ?? null);
    const etag = z ? `"${tag}-${wanted}"` : `"${tag}"`;
    reply.header('Cache-Control', cacheControl).header('Vary', 'Accept-Encoding').header('ETag', etag).type(this.type);
    // any form of these bytes the client holds is still good
    const held = String(req.headers['if-none-match'] ?? '')
      .split(',')
      .map((t) => t.trim().replace(/^W\//, ''));
    const match = held.find((t) => t === '*' || t === `"${tag}"` || t.startsWith(`"${tag}-`));
    if (match)
      return reply
        .header('ETag', match === '*' ? etag : match)
        .code(304)
        .send();
    if (z) reply.header('Content-Encoding', wanted);
    return reply.send(z ?? body);
  }
}

function sendError(reply: FastifyReply, status: number, error: string, file?: string) {
  return reply.code(status).send({ error, status, ...(file ? { file } : {}) });
}

/**
 * Result documents and annotation formats as text (no I/O): hemocount JSON, CSV,
 * Pascal VOC XML (LabelImg), YOLO txt and COCO JSON, written and read back.
 */
import { classFromName } from './vocabulary.js';
import type { GroundTruthBox } from './metrics.js';
import { type SampleSummary, summariseSamples } from './samples.js';
import { type Box, type Candidate, type CellClass, CLASSES, type Detection, type PerClass, perClass } from './types.js';

export interface ImageResult {
  file: string;
  width: number;
  height: number;
  counts: PerClass<number>;
  uncertain: PerClass<number>;
  meanScore: PerClass<number | null>;
  detections: Detection[];
  /** Every candidate above the model's floor, when asked for (to re-threshold later). */
  candidates?: Candidate[];
  tiles?: number;
  /** Factor the image was resized by before detection (`scale: 'auto'` estimates it). */
  scale?: number;
  /** The per-channel gains (R, G, B) that made the background grey, when white-balanced. */
  whiteBalance?: [number, number, number];
  /** Set when the counts average the image and its flips (test-time augmentation, `--tta`). */
  tta?: true;
  ms?: number;
  error?: string;
  /** The sample (smear) this field belongs to: its sub-folder, or a manifest's `sample`. */
  sample?: string;
  /** Set when a person reviewed the cells to review (web app): who and when. */
  reviewed?: { by?: string; at: string };
  /** The boxes came from this label file, not from the model (web app's label review): no probabilities. */
  labels?: string;
}

export interface CountDocument {
  model: { name: string; version: string; sha256: string };
  thresholds: PerClass<number>;
  review: PerClass<number>;
  images: ImageResult[];
  totals: { images: number; failed: number; counts: PerClass<number>; uncertain: PerClass<number> };
  /** One entry per sample (group of fields), when any image belongs to one. */
  samples?: SampleSummary[];
}

/**
 * The count document: one builder for the CLI, the queue's `submit`, the server and the web
 * app, so each writes the same JSON. `rbcCount`: the analyser's red cells per microlitre by sample.
 */
export function countDocument(
  model: CountDocument['model'],
  th: { count: PerClass<number>; review: PerClass<number> },
  results: ImageResult[],
  rbcCount: Record<string, number> = {},
): CountDocument {
  const samples = summariseSamples(results, rbcCount);
  return {
    model: { name: model.name, version: model.version, sha256: model.sha256 },
    thresholds: th.count,
    review: th.review,
    images: results.map(roundResult),
    totals: totals(results),
    ...(samples.length && { samples }),
  };
}

/** The result entry of an image that could not be counted. */
export function failedResult(file: string, error: string): ImageResult {
  const z = () => perClass(() => 0);
  return { file, width: 0, height: 0, counts: z(), uncertain: z(), meanScore: perClass(() => null), detections: [], error };
}

export function totals(images: ImageResult[]): CountDocument['totals'] {
  const ok = images.filter((i) => !i.error);
  return {
    images: ok.length,
    failed: images.length - ok.length,
    counts: perClass((c) => ok.reduce((s, i) => s + i.counts[c], 0)),
    uncertain: perClass((c) => ok.reduce((s, i) => s + i.uncertain[c], 0)),
  };
}

const r2 = (v: number) => Math.round(v * 100) / 100;
const r4 = (v: number) => Math.round(v * 10000) / 10000;
export const roundBox = (b: Box): Box => [r2(b[0]), r2(b[1]), r2(b[2]), r2(b[3])];

/**
 * For documents: boxes to 0.01 px, probabilities to 4 decimals. Candidates keep full
 * precision, so re-thresholding them gives exactly the counts the library gives.
 */
export function roundResult(r: ImageResult): ImageResult {
  return {
    ...r,
    meanScore: perClass((c) => (r.meanScore[c] === null ? null : r4(r.meanScore[c]!))),
    detections: r.detections.map((x) => ({ ...x, score: r4(x.score), box: roundBox(x.box) })),
  };
}

function csvField(v: string | number | null): string {
  // a text cell that a spreadsheet would run as a formula (a file named '=cmd().jpg') is quoted with a leading '
  const s = v === null ? '' : typeof v === 'string' && /^[=+\-@\t\r]/.test(v) ? `'${v}` : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(doc: CountDocument): string {
  const withSample = doc.images.some((i) => i.sample !== undefined);
  const head = [
    ...(withSample ? ['sample'] : []),
    'file',
    'width',
    'height',
    ...CLASSES.map((c) => `${c}`),
    ...CLASSES.map((c) => `${c}_uncertain`),
    ...CLASSES.map((c) => `${c}_mean_score`),
    // how the image was counted: the factor it was resized by (magnification), flips averaged,
    // the white-balance gains R/G/B (blank: not balanced)
    'scale',
    'tta',
    'white_balance',
    'error',
  ];
  // a failed image's cells are blank, not 0: a spreadsheet's mean must not count it as an empty field
  const n = (i: ImageResult, v: number | undefined) => (i.error || v === undefined ? '' : v);
  const rows = doc.images.map((i) => [
    ...(withSample ? [i.sample ?? ''] : []),
    i.file,
    n(i, i.width),
    n(i, i.height),
    ...CLASSES.map((c) => n(i, i.counts?.[c])),
    ...CLASSES.map((c) => n(i, i.uncertain?.[c])),
    ...CLASSES.map((c) => (i.meanScore?.[c] == null ? '' : r4(i.meanScore[c]!))),
    i.scale ?? '',
    i.tta ? 'true' : '',
    i.whiteBalance ? i.whiteBalance.join('/') : '',
    i.error ?? '',
  ]);
  const t = doc.totals;
  rows.push([
    ...(withSample ? [''] : []),
    'TOTAL',
    '',
    '',
    ...CLASSES.map((c) => t.counts[c]),
    ...CLASSES.map((c) => t.uncertain[c]),
    '',
    '',
    '',
    '',
    '',
    t.failed ? `${t.failed} failed` : '',
  ]);
  return [head, ...rows].map((r) => r.map((v) => csvField(v as string | number)).join(',')).join('\n') + '\n';
}

/** One row per sample: totals with intervals, per-field mean and SD, ratios and estimates. */
export function toSamplesCsv(samples: SampleSummary[]): string {
  const rnd = (v: number | null | undefined, k = 2) => (v == null || !Number.isFinite(v) ? '' : Math.round(v * 10 ** k) / 10 ** k);
  const head = [
    'sample',
    'fields',
    'failed',
    ...CLASSES.flatMap((c) => [c, `${c}_ci95_low`, `${c}_ci95_high`, `${c}_per_field_mean`, `${c}_per_field_sd`, `${c}_uncertain`]),
    ...(['WBC', 'Platelets'] as const).flatMap((c) => [`${c}_per_1000_RBC`, `${c}_per_1000_RBC_ci95_low`, `${c}_per_1000_RBC_ci95_high`]),
    'fields_to_review',
    'fields_reviewed',
    'rbc_per_ul',
    ...(['WBC', 'Platelets'] as const).flatMap((c) => [`${c}_per_ul_estimate`, `${c}_per_ul_ci95_low`, `${c}_per_ul_ci95_high`]),
    'estimate_note',
  ];
  // three significant figures: the interval is wider than that
  const g3 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '' : Number(v.toPrecision(3)));
  const rows = samples.map((s) => [
    s.name,
    s.fields,
    s.failed,
    ...CLASSES.flatMap((c) => [s.counts[c], rnd(s.ci95[c][0]), rnd(s.ci95[c][1]), rnd(s.perField[c].mean), rnd(s.perField[c].sd), s.uncertain[c]]),
    ...(['WBC', 'Platelets'] as const).flatMap((c) => [rnd(s.per1000RBC[c]?.value), rnd(s.per1000RBC[c]?.ci95[0]), rnd(s.per1000RBC[c]?.ci95[1])]),
    s.fieldsToReview,
    s.fieldsReviewed,
    s.estimates?.rbcPerUl ?? '',
    ...(['WBC', 'Platelets'] as const).flatMap((c) => [g3(s.estimates?.[c]?.value), g3(s.estimates?.[c]?.ci95[0]), g3(s.estimates?.[c]?.ci95[1])]),
    s.estimates?.note ?? '',
  ]);
  return [head, ...rows].map((r) => r.map((v) => csvField(v as string | number)).join(',')).join('\n') + '\n';
}

/** Minimal CSV reader (quoted fields supported), for tests and round trips. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let f = '';
  let q = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (q) {
      if (ch === '"' && text[i + 1] === '"') {
        f += '"';
        i++;
      } else if (ch === '"') q = false;
      else f += ch;
    } else if (ch === '"') q = true;
    else if (ch === ',') {
      row.push(f);
      f = '';
    } else if (ch === '\n') {
      row.push(f);
      rows.push(row);
      row = [];
      f = '';
    } else f += ch;
  }
  if (f || row.length) {
    row.push(f);
    rows.push(row);
  }
  return rows;
}

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * Pascal VOC as LabelImg writes it (1-based inclusive integer pixel coordinates). Cells in
 * the review band are written with <difficult>1</difficult>: LabelImg shows them, and a
 * reviewer unticks "difficult" to accept one; until then they are no truth (parseVoc keeps
 * them apart as undecided).
 */
export function toVoc(file: string, width: number, height: number, boxes: { label: CellClass; box: Box; uncertain?: boolean }[]): string {
  const objs = boxes.map(({ label, box, uncertain }) => {
    const x1 = Math.max(1, Math.round(box[0]) + 1);
    const y1 = Math.max(1, Math.round(box[1]) + 1);
    const x2 = Math.min(width, Math.max(x1, Math.round(box[2])));
    const y2 = Math.min(height, Math.max(y1, Math.round(box[3])));
    return (
      `\t<object>\n\t\t<name>${label}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>${uncertain ? 1 : 0}</difficult>\n` +
      `\t\t<bndbox>\n\t\t\t<xmin>${x1}</xmin>\n\t\t\t<ymin>${y1}</ymin>\n\t\t\t<xmax>${x2}</xmax>\n\t\t\t<ymax>${y2}</ymax>\n\t\t</bndbox>\n\t</object>\n`
    );
  });
  const name = file.split(/[\\/]/).pop()!;
  return (
    `<annotation>\n\t<folder>images</folder>\n\t<filename>${xmlEscape(name)}</filename>\n` +
    `\t<source>\n\t\t<database>hemocount</database>\n\t</source>\n` +
    `\t<size>\n\t\t<width>${width}</width>\n\t\t<height>${height}</height>\n\t\t<depth>3</depth>\n\t</size>\n` +
    `\t<segmented>0</segmented>\n${objs.join('')}</annotation>\n`
  );
}

export interface ParsedAnnotation {
  filename: string | null;
  width: number | null;
  height: number | null;
  boxes: GroundTruthBox[];
  /** Objects marked difficult: cells nobody has decided yet (a model's review band, a teacher's uncertain cells). */
  undecided: GroundTruthBox[];
  problems: string[];
}

const isBox = (b: number[]): b is Box => b.length === 4;

/**
 * The ground-truth box rules every reader applies (the Python readers in
 * training/hemocount_train/data.py apply the same): a box must be finite with positive size;
 * one reaching more than half a pixel outside the image is clipped with a note, one wholly
 * outside or smaller than 1 px after clipping is dropped with a note.
 */
export function checkBox(box: number[], width: number | null, height: number | null): { box?: Box; problem?: string } {
  const where = `[${box.map((v) => (Number.isFinite(v) ? r2(v) : String(v))).join(', ')}]`;
  if (!isBox(box) || box.some((v) => !Number.isFinite(v))) return { problem: `box ${where} is not four numbers: dropped` };
  const [x1, y1, x2, y2] = box;
  if (x2 <= x1 || y2 <= y1) return { problem: `box ${where} has ${x2 < x1 || y2 < y1 ? 'inverted corners' : 'zero size'}: dropped` };
  if (!width || !height) return { box: [x1, y1, x2, y2] };
  const c: Box = [Math.max(0, x1), Math.max(0, y1), Math.min(width, x2), Math.min(height, y2)];
  if (c[2] - c[0] < 1 || c[3] - c[1] < 1) return { problem: `box ${where} lies outside the ${width}x${height} image: dropped` };
  const moved = Math.max(c[0] - x1, c[1] - y1, x2 - c[2], y2 - c[3]);
  return moved > 0.5 ? { box: c, problem: `box ${where} reaches outside the ${width}x${height} image: clipped` } : { box: c };
}

const tag = (xml: string, name: string) => new RegExp(`<${name}>\\s*([^<]*?)\\s*</${name}>`).exec(xml)?.[1] ?? null;

/** Pascal VOC XML -> 0-based pixel boxes; unknown classes and bad boxes are reported, not fatal. */
export function parseVoc(xml: string): ParsedAnnotation {
  if (!/<annotation[\s>]/.test(xml)) throw new Error('not a Pascal VOC annotation (no <annotation> element)');
  // a file cut short would silently lose its last cells
  if (!/<\/annotation>\s*$/.test(xml)) throw new Error('truncated or malformed Pascal VOC XML (no closing </annotation>)');
  const opened = (xml.match(/<object>/g) ?? []).length;
  const problems: string[] = [];
  const boxes: GroundTruthBox[] = [];
  const undecided: GroundTruthBox[] = [];
  const size = /<size>([\s\S]*?)<\/size>/.exec(xml)?.[1] ?? '';
  const w = Number(tag(size, 'width')) || null;
  const h = Number(tag(size, 'height')) || null;
  const objects = [...xml.matchAll(/<object>([\s\S]*?)<\/object>/g)];
  if (objects.length !== opened) throw new Error(`malformed Pascal VOC XML (${opened} <object> opened, ${objects.length} closed)`);
  objects.forEach(([, body = ''], i) => {
    const name = tag(body, 'name') ?? '';
    const label = classFromName(name);
    const num = (k: string) => Number(tag(body, k) ?? NaN);
    const nums: Box = [num('xmin'), num('ymin'), num('xmax'), num('ymax')];
    if (!label) {
      problems.push(`object ${i + 1}: unknown class '${name}'`);
      return;
    }
    // VOC is 1-based and inclusive, and LabelImg writes xmax == xmin for a click without a drag
    const flat = nums[2] <= nums[0] || nums[3] <= nums[1];
    const c = checkBox(flat ? nums : [nums[0] - 1, nums[1] - 1, nums[2], nums[3]], w, h);
    if (c.problem) problems.push(`object ${i + 1} (${label}): ${c.problem}`);
    if (c.box) (tag(body, 'difficult') === '1' ? undecided : boxes).push({ label, box: c.box });
  });
  return { filename: tag(xml, 'filename'), width: w, height: h, boxes, undecided, problems };
}

/** YOLO txt with hemocount's class order (RBC=0, WBC=1, Platelets=2) unless `names` says otherwise. */
export function toYolo(width: number, height: number, boxes: { label: CellClass; box: Box }[], names: readonly string[] = CLASSES): string {
  return (
    boxes
      .map(({ label, box }) => {
        const id = names.findIndex((n) => classFromName(n) === label);
        const cx = (box[0] + box[2]) / 2 / width;
        const cy = (box[1] + box[3]) / 2 / height;
        return `${id} ${cx.toFixed(6)} ${cy.toFixed(6)} ${((box[2] - box[0]) / width).toFixed(6)} ${((box[3] - box[1]) / height).toFixed(6)}`;
      })
      .join('\n') + (boxes.length ? '\n' : '')
  );
}

export function parseYolo(text: string, width: number, height: number, names: readonly string[]): ParsedAnnotation {
  const problems: string[] = [];
  const boxes: GroundTruthBox[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const p = line.trim().split(/\s+/);
    if (!line.trim()) return;
    const [cx = NaN, cy = NaN, w = NaN, h = NaN] = p.slice(1, 5).map(Number);
    const name = names[Number(p[0])];
    const label = name !== undefined ? classFromName(name) : null;
    if (p.length < 5 || [cx, cy, w, h].some((x) => !Number.isFinite(x))) {
      problems.push(`line ${i + 1} is not 'class cx cy w h'`);
      return;
    }
    if (!label) {
      problems.push(`line ${i + 1}: unknown class id ${p[0]}`);
      return;
    }
    const c = checkBox([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], width, height);
    if (c.problem) problems.push(`line ${i + 1} (${label}): ${c.problem}`);
    if (c.box) boxes.push({ label, box: c.box });
  });
  return { filename: null, width, height, boxes, undecided: [], problems };
}

export interface CocoImage {
  file: string;
  width: number;
  height: number;
  boxes: { label: CellClass; box: Box; score?: number }[];
  /** Annotations with iscrowd 1 (hemocount writes undecided cells so): no truth, left out of evaluations. */
  undecided?: GroundTruthBox[];
}

export function toCoco(images: CocoImage[]): string {
  const doc = {
    info: { description: 'hemocount detections', date_created: new Date().toISOString() },
    categories: CLASSES.map((name, i) => ({ id: i + 1, name, supercategory: 'cell' })),
    images: images.map((im, i) => ({ id: i + 1, file_name: im.file, width: im.width, height: im.height })),
    annotations: images
      .flatMap((im, i) =>
        im.boxes.map((b) => ({
          image_id: i + 1,
          category_id: CLASSES.indexOf(b.label) + 1,
          bbox: [r2(b.box[0]), r2(b.box[1]), r2(b.box[2] - b.box[0]), r2(b.box[3] - b.box[1])],
          area: r2((b.box[2] - b.box[0]) * (b.box[3] - b.box[1])),
          iscrowd: 0,
          ...(b.score !== undefined ? { score: r4(b.score) } : {}),
        })),
      )
      .map((a, k) => ({ id: k + 1, ...a })),
  };
  return JSON.stringify(doc, null, 1) + '\n';
}

export function parseCoco(text: string): { images: CocoImage[]; problems: string[]; unlabelled: Map<string, CellClass[]>; subset: Map<string, string> } {
  // biome-ignore lint/suspicious/noExplicitAny: untrusted JSON; each field is checked before use
  let doc: any;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`not valid JSON (${(e as Error).message})`);
  }
  if (!doc || !Array.isArray(doc.images) || !Array.isArray(doc.annotations)) throw new Error('not a COCO document (needs "images" and "annotations" arrays)');
  if (doc.categories !== undefined && !Array.isArray(doc.categories)) throw new Error('not a COCO document ("categories" must be an array)');
  doc.images.forEach((im: unknown, i: number) => {
    const o = im as Record<string, unknown>;
    if (!o || typeof o.file_name !== 'string' || o.id === undefined) throw new Error(`images[${i}] needs "id" and a "file_name" string`);
  });
  const problems: string[] = [];
  const cats = new Map<number, CellClass | null>((doc.categories ?? []).map((c: { id: number; name: string }) => [c.id, classFromName(c.name)]));
  const byId = new Map<number, CocoImage>();
  const unlabelled = new Map<string, CellClass[]>();
  const subset = new Map<string, string>();
  for (const im of doc.images) {
    if (typeof im.subset === 'string' && im.subset) subset.set(im.file_name, im.subset);
    byId.set(im.id, { file: im.file_name, width: im.width, height: im.height, boxes: [] });
    if (Array.isArray(im.unlabelled)) unlabelled.set(im.file_name, im.unlabelled.map((n: string) => classFromName(n)).filter(Boolean));
  }
  // biome-ignore lint/suspicious/noExplicitAny: untrusted JSON; each field is checked before use
  for (const [i, a] of (doc.annotations as Record<string, any>[]).entries()) {
    if (!a || typeof a !== 'object') {
      problems.push(`annotations[${i}] is not an object: dropped`);
      continue;
    }
    const im = byId.get(a.image_id);
    const label = cats.get(a.category_id);
    if (!im) {
      problems.push(`annotation ${a.id}: unknown image_id ${a.image_id}`);
      continue;
    }
    if (!label) {
      problems.push(`annotation ${a.id}: unknown category ${a.category_id}`);
      continue;
    }
    if (!Array.isArray(a.bbox) || a.bbox.length !== 4 || a.bbox.some((v: unknown) => typeof v !== 'number')) {
      problems.push(`annotation ${a.id}: bbox ${JSON.stringify(a.bbox)} is not [x, y, width, height] numbers: dropped`);
      continue;
    }
    const [x, y, w, h] = a.bbox;
    const c = checkBox([x, y, x + w, y + h], im.width || null, im.height || null);
    if (c.problem) problems.push(`annotation ${a.id} (${label}): ${c.problem}`);
    if (c.box && a.iscrowd === 1) im.undecided = [...(im.undecided ?? []), { label, box: c.box }];
    else if (c.box) im.boxes.push({ label, box: c.box, ...(a.score !== undefined ? { score: a.score } : {}) });
  }
  return { images: [...byId.values()], problems, unlabelled, subset };
}

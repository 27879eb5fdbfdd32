/**
 * The cell vocabulary, read from vocabulary.json at the package root: the one list of
 * classes, their aliases, colours (the paper's: RBC orange, WBC light blue, platelets dark
 * blue), short labels and the image extensions, shared with the Python training code.
 * Its version travels in every exported model's metadata.
 */
import vocab from '../../vocabulary.json' with { type: 'json' };
import { type CellClass, CLASSES, type PerClass, perClass } from './types.js';

export const VOCABULARY_VERSION: number = vocab.version;

if (vocab.classes.map((c) => c.name).join() !== CLASSES.join()) {
  throw new Error(`vocabulary.json lists ${vocab.classes.map((c) => c.name).join(', ')}; this build expects ${CLASSES.join(', ')}`);
}
const byName = Object.fromEntries(vocab.classes.map((c) => [c.name, c])) as Record<CellClass, (typeof vocab.classes)[number]>;

export const COLOURS: PerClass<string> = perClass((c) => byName[c].colour);
export const SHORT: PerClass<string> = perClass((c) => byName[c].short);
export const IMAGE_EXTENSIONS: readonly string[] = vocab.imageExtensions;

const ALIASES = new Map(vocab.classes.flatMap((c) => [c.name.toLowerCase(), ...c.aliases].map((a) => [a, c.name as CellClass])));

/** A class from any spelling seen in public smear datasets (case, spaces and punctuation ignored). */
export function classFromName(name: string): CellClass | null {
  return ALIASES.get(name.toLowerCase().replace(/[^a-z]/g, '')) ?? null;
}

/** Work survives a reload: items (with their image blobs) and settings in IndexedDB. */
import type { Corrections } from '../../src/core/review.js';
import type { Candidate, Thresholds } from '../../src/core/types.js';

export interface Item {
  id: string;
  name: string;
  width: number;
  height: number;
  candidates: Candidate[];
  /** Where the boxes came from: the model on the server or in this browser, or a label file (VOC) under review. */
  mode: 'server' | 'private' | 'labels';
  corrections: Corrections;
  blob: Blob;
  error?: string;
  /** Stamped when a person has decided all the field's doubtful cells, or marks it reviewed. */
  reviewed?: { by?: string; at: string };
}

/** The batch is one sample: its name, the reviewer's name, the analyser's red cells per microlitre (as typed). */
export interface SampleInfo {
  name: string;
  reviewer: string;
  rbcCount: string;
}

export interface Saved {
  items: Item[];
  thresholds: Thresholds | null;
  current: string | null;
  model: string | null;
  sample?: SampleInfo;
  /** Where the next images are counted: a private session stays private after a reload. */
  privateMode?: boolean;
}

const DB = 'hemocount';
const open = () =>
  new Promise<IDBDatabase>((res, rej) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore('state');
    r.onsuccess = () => res(r.result);
    r.onerror = () => rej(r.error);
  });

export async function save(s: Saved): Promise<void> {
  const db = await open();
  await new Promise<void>((res, rej) => {
    const tx = db.transaction('state', 'readwrite');
    tx.objectStore('state').put(s, 'session');
    tx.oncomplete = () => res();
    tx.onerror = () => rej(tx.error);
  });
  db.close();
}

export async function restore(): Promise<Saved | null> {
  try {
    const db = await open();
    const v = await new Promise<Saved | null>((res) => {
      const r = db.transaction('state').objectStore('state').get('session');
      r.onsuccess = () => res((r.result as Saved) ?? null);
      r.onerror = () => res(null);
    });
    db.close();
    return v;
  } catch {
    return null;
  }
}

/**
 * Large images are read in overlapping tiles at native resolution. Each tile "owns" the
 * cells whose centre falls in its core (the overlap is split at its midline), and the
 * overlap is wider than the largest cell, so the owning tile always sees the whole cell:
 * a cell on a seam is counted exactly once.
 */
import { classwiseNms } from './decode.js';
import type { Candidate } from './types.js';

export interface Tile {
  x: number;
  y: number;
  width: number;
  height: number;
  /** Core region [x1, y1, x2, y2] in image pixels. */
  core: [number, number, number, number];
}

function starts(total: number, size: number, overlap: number, align: number): number[] {
  if (total <= size) return [0];
  // Starts on multiples of `align` (the network's largest stride): a tile then sees each cell
  // at the same sub-stride offset as one pass over the whole image would, so tiled and whole
  // counts agree (a convolutional network's scores shift slightly with that offset). The
  // last tile may be narrower.
  const step = Math.floor((size - overlap) / align) * align;
  if (step <= 0) throw new RangeError(`tile size ${size} leaves no step after a ${overlap} px overlap aligned to ${align}`);
  const n = Math.ceil((total - size) / step) + 1;
  return Array.from({ length: n }, (_, i) => i * step);
}

export function planTiles(width: number, height: number, size: number, overlap: number, align = 1): Tile[] {
  const xs = starts(width, size, overlap, align);
  const ys = starts(height, size, overlap, align);
  // a core ends at the middle of its overlap with the next tile (i: an index into `list`)
  const edge = (list: number[], i: number, total: number, lo: boolean) => {
    if (lo) return i === 0 ? 0 : (list[i]! + list[i - 1]! + size) / 2;
    return i === list.length - 1 ? total : (list[i + 1]! + list[i]! + size) / 2;
  };
  const tiles: Tile[] = [];
  for (const [j, y] of ys.entries()) {
    for (const [i, x] of xs.entries()) {
      tiles.push({
        x,
        y,
        width: Math.min(size, width - x),
        height: Math.min(size, height - y),
        core: [edge(xs, i, width, true), edge(ys, j, height, true), edge(xs, i, width, false), edge(ys, j, height, false)],
      });
    }
  }
  return tiles;
}

/** Tile-local candidates -> image candidates this tile owns. */
export function ownedByTile(tile: Tile, cands: Candidate[]): Candidate[] {
  const [cx1, cy1, cx2, cy2] = tile.core;
  const out: Candidate[] = [];
  for (const c of cands) {
    const box: Candidate['box'] = [c.box[0] + tile.x, c.box[1] + tile.y, c.box[2] + tile.x, c.box[3] + tile.y];
    const mx = (box[0] + box[2]) / 2;
    const my = (box[1] + box[3]) / 2;
    if (mx >= cx1 && mx < cx2 && my >= cy1 && my < cy2) out.push({ ...c, box });
  }
  return out;
}

/** Merge the owned candidates of all tiles; a last NMS removes near-duplicates on seams. */
export function mergeTiles(perTile: Candidate[][], iou: number): Candidate[] {
  return classwiseNms(perTile.flat(), iou);
}

"""Annotation readers (Pascal VOC XML, YOLO txt, COCO JSON), defect reports and the
group-aware train/validation split. Pure Python + Pillow: no torch here."""
from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

# the cell vocabulary shared with the TypeScript side (classes, aliases, colours, extensions)
VOCABULARY = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vocabulary.json"), encoding="utf-8"))
CLASSES = tuple(c["name"] for c in VOCABULARY["classes"])
_ALIASES = {a: c["name"] for c in VOCABULARY["classes"] for a in [c["name"].lower(), *c["aliases"]]}
IMAGE_EXTS = tuple(VOCABULARY["imageExtensions"])


def normalise_class(name: str) -> str | None:
    """Map the spellings seen in public smear datasets to RBC / WBC / Platelets."""
    return _ALIASES.get(re.sub(r"[^a-z]", "", name.lower()))


@dataclass
class Sample:
    image: str                      # absolute path
    width: int
    height: int
    boxes: list = field(default_factory=list)   # [x1, y1, x2, y2] in pixels, 0-based
    labels: list = field(default_factory=list)  # indices into CLASSES
    source: str = ""                # dataset tag, e.g. "cbc" or "txl-pbc"
    # Classes whose absence in this image must not be read as "no such cell here":
    # their anchors are ignored by the loss instead of being taught as background.
    unlabelled: set = field(default_factory=set)
    # Classes whose boxes are right but not exhaustive (CBC's red cells and platelets):
    # boxes are positives, but no anchor is taught "background" for that class.
    incomplete: set = field(default_factory=set)
    # Cells nobody has confirmed either way (VOC <difficult>1</difficult>: a teacher model's
    # uncertain detections, cells left for a reviewer): (box, label) pairs. The loss teaches
    # neither "this class" nor "not this class" on the anchors that overlap them.
    ignore: list = field(default_factory=list)


def rbc_sides(s: Sample) -> list[float]:
    """The square roots of an image's red-cell box areas: its magnification, cell by cell."""
    rbc = CLASSES.index("RBC")
    return [((b[2] - b[0]) * (b[3] - b[1])) ** 0.5 for b, lab in zip(s.boxes, s.labels) if lab == rbc]


def median_cell_px(samples) -> float | None:
    """The red cells' size in a set of images: per image with at least 5 red cells, the median
    of rbc_sides; the median of those. None without such images."""
    sizes = [statistics.median(v) for v in map(rbc_sides, samples) if len(v) >= 5]
    return statistics.median(sizes) if sizes else None


def iou(a, b) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (plain Python, for scripts)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class Defects:
    """Collects annotation problems so that a reader reports them instead of crashing."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, problem: str):
        self.items.append((path, problem))

    def summary(self, limit: int = 20) -> str:
        lines = [f"{p}: {m}" for p, m in self.items[:limit]]
        if len(self.items) > limit:
            lines.append(f"... and {len(self.items) - limit} more")
        return "\n".join(lines)


def _shown(box) -> str:
    """A box in a message: pixels to one decimal (YOLO's normalised floats print 582.4000000000001)."""
    return "[" + ", ".join(f"{v:.1f}".rstrip("0").rstrip(".") for v in box) + "]"


def _clip_box(box, w, h, path, defects: Defects, min_size=1.0):
    """The ground-truth box rules, as in src/core/formats.ts (checkBox): a box must have
    positive size; one reaching more than half a pixel outside the image is clipped with a
    note; one with inverted corners, or smaller than 1 px after clipping, is dropped."""
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        defects.add(path, f"box {box} has inverted corners: dropped")
        return None
    cx1, cy1 = min(max(x1, 0.0), w), min(max(y1, 0.0), h)
    cx2, cy2 = min(max(x2, 0.0), w), min(max(y2, 0.0), h)
    if cx2 - cx1 < min_size or cy2 - cy1 < min_size:
        where = "lies outside the image" if (x2 - x1 >= min_size and y2 - y1 >= min_size) else "has (almost) zero size"
        defects.add(path, f"box {_shown(box)} {where}: dropped")
        return None
    # YOLO's normalised floats round-trip with ~1e-4 px noise: only real excursions count
    if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > 0.5:
        defects.add(path, f"box {_shown(box)} lies partly outside the {w}x{h} image: clipped")
    return [cx1, cy1, cx2, cy2]


# EXIF orientations that swap width and height (5-8: the picture is shown turned by 90 degrees)
_TURNED = {5, 6, 7, 8}


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as the picture is shown, i.e. after its EXIF orientation, as hemocount's
    count, evaluate and the VOC / YOLO files it writes see it."""
    w, h = im.size
    return (h, w) if im.getexif().get(0x0112) in _TURNED else (w, h)


def open_rgb(path: str) -> Image.Image:
    """The image as hemocount counts it: turned by its EXIF orientation, transparency
    flattened onto white (sharp's flatten in `count`), RGB."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, im).convert("RGB")
        return im.convert("RGB")


def _image_size(img: str, defects: Defects):
    try:
        with Image.open(img) as im:
            return oriented_size(im)
    except Exception as e:  # noqa: BLE001 - any decoder error is a defect to report
        defects.add(img, f"cannot be read as an image ({e}): skipped")
        return None


def _find_image(folder: str, stem: str):
    for ext in IMAGE_EXTS:
        for cand in (stem + ext, stem + ext.upper()):
            p = os.path.join(folder, cand)
            if os.path.isfile(p):
                return p
    return None


def read_voc(ann_dir: str, image_dir: str | None = None, source="voc", defects=None, only=None) -> list[Sample]:
    """LabelImg-style Pascal VOC: one XML per image; coordinates are 1-based inclusive.
    only: read just this file name of ann_dir."""
    defects = defects if defects is not None else Defects()
    image_dir = image_dir or ann_dir
    samples = []
    claimed: dict = {}  # image -> (xml name, sample): one image, one set of labels
    for name in [only] if only else sorted(os.listdir(ann_dir)):
        if not name.lower().endswith(".xml"):
            continue
        path = os.path.join(ann_dir, name)
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            defects.add(path, f"not valid XML ({e}): skipped")
            continue
        fname = (root.findtext("filename") or "").strip()
        stem = os.path.splitext(name)[0]
        img = os.path.join(image_dir, fname) if fname and os.path.isfile(os.path.join(image_dir, fname)) else _find_image(image_dir, stem)
        if img is None:
            defects.add(path, f"image '{fname or stem}' listed but no file found in {image_dir}: skipped")
            continue
        size = _image_size(img, defects)
        if size is None:
            continue
        w, h = size
        try:  # a file written for a resized copy would put every box in the wrong place
            said = (int(root.findtext("size/width") or 0), int(root.findtext("size/height") or 0))
        except ValueError:
            said = (0, 0)
        if all(said) and said != (w, h):
            defects.add(path, f"describes a {said[0]}x{said[1]} image, {os.path.basename(img)} is {w}x{h}: skipped")
            continue
        s = Sample(img, w, h, source=source)
        for obj in root.iter("object"):
            cls = normalise_class(obj.findtext("name") or "")
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            if cls is None:
                defects.add(path, f"unknown class '{obj.findtext('name')}': box ignored")
                continue
            bb = obj.find("bndbox")
            try:
                x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError, AttributeError):
                defects.add(path, "object without a numeric <bndbox>: ignored")
                continue
            # 1-based inclusive; LabelImg writes xmax == xmin for a click without a drag
            box = (_clip_box([x1, y1, x2, y2], w, h, path, defects) if x2 <= x1 or y2 <= y1
                   else _clip_box([x1 - 1, y1 - 1, x2, y2], w, h, path, defects))
            if box is not None and difficult:
                # hemocount writes cells to review as difficult: not truth until a reviewer
                # unticks it, so neither a cell nor background to the loss
                s.ignore.append((box, CLASSES.index(cls)))
            elif box is not None:
                s.boxes.append(box)
                s.labels.append(CLASSES.index(cls))
        if img in claimed:
            # two files labelling one image: the one named after the image wins, the other is reported
            other, prev = claimed[img]
            own = os.path.splitext(os.path.basename(img))[0]
            keep_new = stem == own and os.path.splitext(other)[0] != own
            loser = other if keep_new else name
            defects.add(os.path.join(ann_dir, loser), f"describes {os.path.basename(img)}, which "
                        f"{name if keep_new else other} describes too: skipped")
            if keep_new:
                samples[samples.index(prev)] = s
                claimed[img] = (name, s)
            continue
        claimed[img] = (name, s)
        samples.append(s)
    return samples


def relabel(samples: list[Sample], voc_dir: str, defects=None) -> int:
    """Replace the labels of the samples that have a VOC file of the same stem in voc_dir
    (labels completed by a reviewer, or by a teacher model: scripts/pseudo-labels.py), and
    take them as complete: the file boxes every cell, its difficult objects are the cells
    left undecided. Returns how many samples were relabelled."""
    defects = defects if defects is not None else Defects()
    by_stem: dict = {}
    for s in samples:
        by_stem.setdefault(os.path.splitext(os.path.basename(s.image))[0], []).append(s)
    if not os.path.isdir(voc_dir):
        raise ValueError(f"{voc_dir}: no such folder of VOC annotations")
    done = 0
    for name in sorted(os.listdir(voc_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() != ".xml":
            continue
        path = os.path.join(voc_dir, name)
        if len(by_stem.get(stem, [])) != 1:
            defects.add(path, "names no training image: not used" if stem not in by_stem else
                        f"names {len(by_stem[stem])} training images ({', '.join(x.image for x in by_stem[stem])}): not used")
            continue
        s = by_stem[stem][0]
        found = read_voc(voc_dir, os.path.dirname(s.image), source=s.source, defects=defects, only=name)
        if not found:
            continue
        new = found[0]
        if new.image != s.image:
            defects.add(path, f"describes {new.image}, not {s.image}: not used")
            continue
        s.boxes, s.labels, s.ignore = new.boxes, new.labels, new.ignore
        # a class the file has no box of stays unlabelled if the image was (CBC smears
        # with an unboxed white cell: a teacher adds none)
        s.incomplete, s.unlabelled = set(), {c for c in s.unlabelled if c not in s.labels}
        done += 1
    return done


def yaml_sets(text: str, folder: str) -> dict:
    """The image folders a YOLO data.yaml names as its sets (train, val, test) -> (images, labels),
    resolved as Ultralytics does: against its `path` (default: the yaml's folder), a leading '../'
    dropped when that does not exist (Roboflow's exports); labels in the folder named like the
    images with the last 'images' in the path replaced by 'labels'. Lists are not read."""
    def value(key):
        m = re.search(rf"^{key}[ \t]*:[ \t]*([^#\n]*)", text, re.M)
        v = m.group(1).strip().strip("'\"") if m else ""
        return v if v and not v.startswith("[") else None
    root = os.path.normpath(os.path.join(folder, value("path") or "."))
    sets = {}
    for key in ("train", "val", "test"):
        v = value(key)
        if v is None:
            continue
        images = os.path.normpath(os.path.join(root, v))
        if not os.path.exists(images) and v.startswith("../"):
            images = os.path.normpath(os.path.join(root, v[3:]))
        parts = images.split(os.sep)
        if "images" in parts:
            parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
        sets[key] = (images, os.sep.join(parts))
    return sets


def read_class_names(path: str) -> list[str]:
    """classes.txt (one per line) or a YOLO data.yaml with `names: [...]` / a names list."""
    text = open(path, encoding="utf-8").read()
    if path.endswith((".yaml", ".yml")):
        m = re.search(r"names\s*:\s*\[(.*?)\]", text, re.S)
        if m:
            return [t.strip().strip("'\"") for t in m.group(1).split(",") if t.strip()]
        m = re.search(r"names\s*:\s*\n((?:\s+.*\n?)+)", text)
        if m:
            return [re.sub(r"^\s*(-|\d+\s*:)\s*", "", ln).strip().strip("'\"")
                    for ln in m.group(1).splitlines() if ln.strip()]
        raise ValueError(f"{path}: no 'names' list found")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def read_yolo(image_dir: str, label_dir: str, class_names: list[str], source="yolo", defects=None) -> list[Sample]:
    defects = defects if defects is not None else Defects()
    mapped = [normalise_class(n) for n in class_names]
    samples = []
    for name in sorted(os.listdir(label_dir)):
        if not name.endswith(".txt") or name == "classes.txt":
            continue
        path = os.path.join(label_dir, name)
        img = _find_image(image_dir, os.path.splitext(name)[0])
        if img is None:
            defects.add(path, f"no image for this label file in {image_dir}: skipped")
            continue
        size = _image_size(img, defects)
        if size is None:
            continue
        w, h = size
        s = Sample(img, w, h, source=source)
        seen = set()
        for i, line in enumerate(open(path, encoding="utf-8").read().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                cid = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:5])
                assert len(parts) >= 5
            except (ValueError, AssertionError):
                defects.add(path, f"line {i} is not 'class cx cy w h': ignored")
                continue
            if cid < 0 or cid >= len(mapped) or mapped[cid] is None:
                named = f" ({class_names[cid]})" if 0 <= cid < len(class_names) else ""
                defects.add(path, f"line {i}: unknown class id {cid}{named}: ignored")
                continue
            key = (cx, cy, bw, bh)
            if (cid,) + key in seen:
                defects.add(path, f"line {i} repeats an earlier box exactly: ignored")
                continue
            seen.add((cid,) + key)
            box = _clip_box([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h],
                            w, h, path, defects)
            if box is not None:
                s.boxes.append(box)
                s.labels.append(CLASSES.index(mapped[cid]))
        samples.append(s)
    # an image without a label file may be unlabelled rather than empty: named, not trained on
    if os.path.isdir(image_dir):
        labelled = {os.path.splitext(n)[0] for n in os.listdir(label_dir)}
        for name in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTS and stem not in labelled:
                defects.add(os.path.join(image_dir, name), f"no label file {stem}.txt in {os.path.normpath(label_dir)} (an image "
                            "without cells needs an empty one): not used")
    return samples


def read_coco(json_path: str, image_dir: str | None = None, source="coco", defects=None) -> list[Sample]:
    defects = defects if defects is not None else Defects()
    image_dir = image_dir or os.path.dirname(json_path)
    doc = json.load(open(json_path, encoding="utf-8"))
    cats = {c["id"]: normalise_class(c["name"]) for c in doc.get("categories", [])}
    by_img: dict = {}
    for im in doc.get("images", []):
        p = os.path.join(image_dir, im["file_name"])
        if not os.path.isfile(p):
            defects.add(json_path, f"image '{im['file_name']}' listed but no file found: skipped")
            continue
        by_img[im["id"]] = Sample(p, int(im["width"]), int(im["height"]), source=source)
    for a in doc.get("annotations", []):
        s = by_img.get(a["image_id"])
        cls = cats.get(a["category_id"])
        if s is None:
            continue
        if cls is None:
            defects.add(json_path, f"annotation {a.get('id')}: unknown category {a['category_id']}: ignored")
            continue
        x, y, bw, bh = a["bbox"]
        box = _clip_box([x, y, x + bw, y + bh], s.width, s.height, json_path, defects)
        if box is not None and a.get("iscrowd") == 1:  # hemocount writes undecided cells so
            s.ignore.append((box, CLASSES.index(cls)))
        elif box is not None:
            s.boxes.append(box)
            s.labels.append(CLASSES.index(cls))
    return list(by_img.values())


def read_dataset(path: str, defects=None, split: str | None = None) -> list[Sample]:
    """Auto-detect the annotation format of a folder (or a COCO .json file, or a YOLO data.yaml,
    which names its folder); `split` picks one YOLO set, labels/<split>/, as `hemocount
    evaluate --split` does."""
    defects = defects if defects is not None else Defects()
    yaml = "data.yaml"
    if path.endswith((".yaml", ".yml")):  # a YOLO yaml (data.yaml, coco8.yaml, ...) describes its folder
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        path, yaml = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    if path.endswith(".json"):
        if split is not None:
            raise ValueError(f"{path}: a split picks labels/<split>/ of a YOLO set; a COCO file has none")
        return read_coco(path, defects=defects)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such dataset folder")
    sub = lambda *p: os.path.join(path, *p)  # noqa: E731
    # the sets the yaml names (train/val/test); one whose labels are not there is named, not skipped silently
    named = list(yaml_sets(open(sub(yaml), encoding="utf-8").read(), path).items()) if os.path.isfile(sub(yaml)) else []
    sets = [(k, v) for k, v in named if os.path.isdir(v[1])]
    for k, (_, labels) in named:
        if not os.path.isdir(labels):
            if split == k:
                raise ValueError(f"{path}: {yaml}'s {k} set: no labels at {labels}")
            if split is None:
                defects.add(sub(yaml), f"its {k} set has no labels at {labels}: skipped")
    # classes.txt beside labels/, or inside it (where `hemocount count --yolo DIR/labels` writes it)
    names_file = next((sub(n) for n in (yaml, "classes.txt", os.path.join("labels", "classes.txt")) if os.path.isfile(sub(n))), None)
    yolo = bool(sets) or os.path.isdir(sub("labels"))
    if split is not None and not (yolo and names_file):
        raise ValueError(f"{path}: a split picks one set of a YOLO folder (labels/<split>/ with classes.txt, or a "
                         "data.yaml naming its sets); this folder is none")
    # YOLO first, as `hemocount evaluate` reads a folder that holds both
    if yolo and names_file:
        names = read_class_names(names_file)
        tag = os.path.basename(path.rstrip("/"))
        if sets:
            if split is not None and split not in dict(sets):
                raise ValueError(f"{path}: {yaml} names no set '{split}'; its sets: {', '.join(k for k, _ in sets)}")
            dirs = [(f"{tag}/{k}", images, labels) for k, (images, labels) in sets if split is None or k == split]
        else:
            splits = [d for d in sorted(os.listdir(sub("labels"))) if os.path.isdir(sub("labels", d))]
            if split is not None and split not in splits:
                raise ValueError(f"{path}: no split '{split}' (labels/{split}/); "
                                 + (f"its splits: {', '.join(splits)}" if splits else "it has no splits"))
            dirs = [(f"{tag}/{d}".rstrip("/"), sub("images", d), sub("labels", d))
                    for d in ([split] if split is not None else splits or [""])]
        out = []
        for source, images, labels in dirs:
            out += read_yolo(images, labels, names, source=source, defects=defects)
        return out
    # the layouts `hemocount evaluate` reads: annotations/ (+ images/), Annotations/, truth/ beside the images
    for ann in ("annotations", "Annotations", "truth"):
        if os.path.isdir(sub(ann)) and any(f.endswith(".xml") for f in os.listdir(sub(ann))):
            images = next((sub(d) for d in ("images", "JPEGImages") if os.path.isdir(sub(d))), path)
            return read_voc(sub(ann), images, source=os.path.basename(path.rstrip("/")), defects=defects)
    if any(f.endswith(".xml") for f in os.listdir(path)):
        return read_voc(path, path, source=os.path.basename(path.rstrip("/")), defects=defects)
    if yolo:
        raise ValueError(f"{path}: YOLO labels need a data.yaml or classes.txt with the class names")
    jsons = [f for f in os.listdir(path) if f.endswith(".json")]
    if len(jsons) == 1:
        return read_coco(sub(jsons[0]), path, defects=defects)
    raise ValueError(f"{path}: found no VOC XML, YOLO labels/ or COCO JSON annotations")


def _thumb(path: str):
    """A 16 x 16 grey thumbnail (JPEG decoded at reduced scale): what one smear field looks
    like whatever its encoding. Re-encoded copies of a field measured 0.1-0.4 (mean absolute
    difference, 0-255) from it; distinct fields of the shared split at least 8.5 apart."""
    with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        return np.asarray(ImageOps.exif_transpose(im).convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32)


SAME_PIXELS = 2.0  # thumbnail distance under which two images are one field


def shared_images(train: list[Sample], val: list[Sample]) -> list[tuple[str, str]]:
    """(validation image, training image) pairs that are one image: the same file, or the same
    pixels under another name (a copy, a JPEG saved again, a PNG; same size, thumbnails within
    SAME_PIXELS). Scoring a model on what it trained on says nothing about new smears."""
    def dims(path):
        with Image.open(path) as im:  # the header only
            return oriented_size(im)
    train_files = {s.image for s in train}
    out, wanted = [], {}
    for s in val:
        if s.image in train_files:
            out.append((s.image, s.image))
        else:
            wanted.setdefault(dims(s.image), []).append(s.image)
    group = {}  # training images of the sizes asked about
    for t in train_files if wanted else ():
        d = dims(t)
        if d in wanted:
            group.setdefault(d, []).append(t)
    for d, vs in wanted.items():
        ts = sorted(group.get(d, []))
        if not ts:
            continue
        tt = np.stack([_thumb(t) for t in ts])
        for v in vs:
            dist = np.abs(tt - _thumb(v)).mean(axis=(1, 2))
            if dist.min() < SAME_PIXELS:
                out.append((v, ts[int(dist.argmin())]))
    order = {s.image: i for i, s in enumerate(val)}
    return sorted(out, key=lambda pair: order[pair[0]])


def mark_unlabelled(samples: list[Sample], defects=None) -> None:
    """An image with no box of a class that the rest of its set labels is taken as not
    exhaustively labelled for that class (CBC: 11 smears with visible but unboxed red
    cells). Training ignores that class's loss there rather than teaching 'background'."""
    defects = defects if defects is not None else Defects()
    by_source: dict = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    for src, group in by_source.items():
        for c, name in enumerate(CLASSES):
            with_c = sum(1 for s in group if c in s.labels)
            # Only classes that are dense (present in >= 90% of the set) are suspicious
            # when missing; platelets are often genuinely absent from a field.
            if with_c >= 0.9 * len(group):
                for s in group:
                    if c not in s.labels:
                        s.unlabelled.add(c)
                        defects.add(s.image, f"no {name} box although {with_c}/{len(group)} images of "
                                             f"'{src}' have one: {name} loss ignored on this image")


# --- group-aware split for the shared collection -------------------------------------
def read_groups(csv_path: str) -> dict[str, str]:
    """bccd-groups.csv -> {image path relative to the dataset root: unit id}. Groups that
    show overlapping fields of view are merged into one unit (union-find), so a split by
    unit never puts the same cells on both sides."""
    import csv
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    parent: dict[str, str] = {}

    def find(g):
        parent.setdefault(g, g)
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for r in rows:
        find(r["group"])
        for other in filter(None, (r.get("overlapping_field_groups") or "").split(";")):
            parent[find(other.strip())] = find(r["group"])
    return {r["image"]: "g" + find(r["group"]) for r in rows}


def _name_hash(path: str) -> int:
    return int(hashlib.md5(os.path.basename(path).encode()).hexdigest(), 16) % 100


# Known overlapping fields of view in BCCD (datasets README): such pairs share cells.
BCCD_OVERLAPS = [("00223", "00263"), ("00229", "00258"), ("00233", "00254"), ("00037", "00038")]
FULL_FIELD = (640, 480)
AUGMENTED_COPY = (416, 416)


def shared_split(root: str, defects=None, val_closeup_pct=15):
    """Train/validation split of ../shared/datasets with the most complete labels.

    - Units: the smears of bccd-groups.csv (overlapping fields merged); any other image
      is a unit of its own. A unit is entirely on one side.
    - Full fields (640 x 480): where TXL-PBC holds a pixel-identical copy of a CBC smear,
      the TXL-PBC copy and its complete labels are used and the CBC copy is dropped.
      CBC smears without such a copy keep their boxes but their red-cell and platelet
      labels are marked incomplete (`Sample.incomplete`): those boxes are positives, and
      no anchor is taught "no red cell / no platelet" on them. They train only.
    - Validation, full fields (source 'full'): the units with complete labels none of whose
      CBC images is a training image upstream, i.e. every CBC image in them is listed in
      cbc/validation.txt (or is a known overlapping partner of one), or they hold no CBC
      image at all. Earlier releases trained on the other CBC images, so this keeps a
      model fine-tuned from them (`--init`) honest on validation.
    - Validation, close-ups (source 'closeup'): the units all of whose images fall in the
      `val_closeup_pct` % bucket of a hash of the file name (the earlier releases' rule).
    - TXL-PBC's 416 x 416 augmented copies train only; those of validation smears are
      dropped."""
    defects = defects if defects is not None else Defects()
    units = read_groups(os.path.join(root, "bccd-groups.csv"))
    rel = lambda s: os.path.relpath(s.image, root).replace(os.sep, "/")  # noqa: E731
    cbc = read_voc(os.path.join(root, "cbc", "annotations"), os.path.join(root, "cbc", "images"),
                   source="cbc-partial", defects=defects)
    txl_root = os.path.join(root, "txl-pbc")
    names = read_class_names(os.path.join(txl_root, "data.yaml"))
    txl = []
    for d in ("train", "val"):
        txl += read_yolo(os.path.join(txl_root, "images", d), os.path.join(txl_root, "labels", d), names,
                         source="txl-pbc", defects=defects)
    unit_of = lambda s: units.get(rel(s), rel(s))  # noqa: E731
    held = {ln.strip() for ln in open(os.path.join(root, "cbc", "validation.txt")) if ln.strip()}
    held_ids = {re.sub(r"\D", "", n) for n in held}
    for a, b in BCCD_OVERLAPS:
        if a in held_ids or b in held_ids:
            held_ids |= {a, b}
    cbc_trained_units = {unit_of(s) for s in cbc if re.sub(r"\D", "", os.path.basename(s.image)) not in held_ids}
    closeup_train_units = {unit_of(s) for s in txl if _name_hash(s.image) >= val_closeup_pct}
    complete_units = {unit_of(s) for s in txl if (s.width, s.height) == FULL_FIELD}
    samples = []
    for s in txl:
        size = (s.width, s.height)
        s.source = "full" if size == FULL_FIELD else "augmented" if size == AUGMENTED_COPY else "closeup"
        samples.append(s)
    for s in cbc:
        if unit_of(s) in complete_units:
            continue  # its TXL-PBC copy (same pixels, complete labels) stands in for it
        s.incomplete |= {CLASSES.index("RBC"), CLASSES.index("Platelets")}
        samples.append(s)
    train, val = [], []
    for s in samples:
        u = unit_of(s)
        if s.source == "full" or (s.source == "augmented" and u in complete_units):
            to_val = u in complete_units and u not in cbc_trained_units
        elif s.source == "closeup":
            to_val = u not in closeup_train_units
        else:
            to_val = False
        if to_val and s.source == "augmented":
            continue  # an augmented copy of a validation smear is neither trained on nor scored
        (val if to_val else train).append(s)
    mark_unlabelled(train, defects)
    mark_unlabelled(val, defects)
    return train, val

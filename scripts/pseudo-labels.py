#!/usr/bin/env python3
"""Complete the labels of the CBC smears that have no fully labelled TXL-PBC copy, with a
teacher model, as VOC files for `hemocount train --relabel DIR`. A reviewer checks them in
the web app (add each image together with its file: the difficult objects are the cells to
accept or reject; export VOC) or in LabelImg (untick "difficult" to make one a cell, delete
it to make it background).

    /usr/bin/python3 scripts/pseudo-labels.py OUT_DIR [--model fp32] [--cell 0.6] [--floor 0.2]

Per image: the expert's CBC boxes stay as they are (white cells are completely boxed in CBC,
so the teacher adds none); the teacher's red cells and platelets (`hemocount count --tta
--scale 1`, highest score first) that overlap no box kept so far (IoU < 0.3) are added, as
cells where the score reaches --cell and as difficult (undecided) objects from --floor up.
Below --floor is background. Only training images are read: the split is shared_split's."""
import argparse
import json
import os
import subprocess
import sys
from xml.sax.saxutils import escape

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "training"))
from hemocount_train.__main__ import DEFAULT_DATA  # noqa: E402
from hemocount_train.data import CLASSES, Defects, iou, shared_split  # noqa: E402

TEACHER_CLASSES = ("RBC", "Platelets")  # CBC boxes every white cell


def merge(expert, teacher, cell, floor, overlap=0.3, undecided=()):
    """expert: [(box, class name)], and the expert's own undecided cells; teacher: hemocount
    detections. -> [(box, name, difficult)]."""
    out = [(b, k, False) for b, k in expert] + [(b, k, True) for b, k in undecided]
    for d in sorted(teacher, key=lambda d: -d["score"]):
        if d["label"] not in TEACHER_CLASSES or d["score"] < floor:
            continue
        if all(iou(d["box"], b) < overlap for b, _, _ in out):
            out.append((d["box"], d["label"], d["score"] < cell))
    return out


def voc(image, width, height, objects):
    """LabelImg's VOC: 1-based inclusive pixel coordinates."""
    body = "".join(
        f"\t<object>\n\t\t<name>{escape(k)}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>{int(diff)}</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{round(b[0]) + 1}</xmin>\n\t\t\t<ymin>{round(b[1]) + 1}</ymin>\n"
        f"\t\t\t<xmax>{max(round(b[0]) + 1, round(b[2]))}</xmax>\n\t\t\t<ymax>{max(round(b[1]) + 1, round(b[3]))}</ymax>\n"
        f"\t\t</bndbox>\n\t</object>\n" for b, k, diff in objects)
    return (f"<annotation>\n\t<folder>{escape(os.path.basename(os.path.dirname(image)))}</folder>\n"
            f"\t<filename>{escape(os.path.basename(image))}</filename>\n"
            f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{body}</annotation>\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--model", default="fp32", help="the teacher (default: the shipped fp32 model)")
    ap.add_argument("--cell", type=float, default=0.6, help="a teacher's cell from this score (default 0.6)")
    ap.add_argument("--floor", type=float, default=0.2, help="undecided from this score, background below (0.2)")
    a = ap.parse_args()
    if not 0 < a.floor <= a.cell < 1:
        sys.exit("need 0 < --floor <= --cell < 1")
    train, _ = shared_split(DEFAULT_DATA, Defects())
    todo = [s for s in train if s.incomplete]
    if not todo:
        sys.exit("no training image with incomplete labels in the shared split")
    spec = lambda v: ",".join(f"{k}={v}" for k in TEACHER_CLASSES)  # noqa: E731
    r = subprocess.run(["node", os.path.join(ROOT, "bin", "hemocount.js"), "count", "--model", a.model, "--tta",
                        "--scale", "1", "--threshold", spec(a.cell), "--review", spec(a.floor), "--json", "-",
                        "--quiet", *[s.image for s in todo]], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"hemocount count failed: {r.stderr.strip()}")
    found = {os.path.abspath(im["file"]): im for im in json.loads(r.stdout)["images"]}
    os.makedirs(a.out, exist_ok=True)
    totals = {"images": 0, "expert": 0, "cells": 0, "undecided": 0}
    for s in todo:
        im = found[os.path.abspath(s.image)]
        if im.get("error"):
            sys.exit(f"{s.image}: {im['error']}")
        objects = merge([(b, CLASSES[k]) for b, k in zip(s.boxes, s.labels)], im["detections"], a.cell, a.floor,
                        undecided=[(b, CLASSES[k]) for b, k in s.ignore])
        stem = os.path.splitext(os.path.basename(s.image))[0]
        with open(os.path.join(a.out, stem + ".xml"), "w", encoding="utf-8") as f:
            f.write(voc(s.image, s.width, s.height, objects))
        totals["images"] += 1
        totals["expert"] += len(s.boxes)
        totals["cells"] += sum(1 for _, _, d in objects if not d) - len(s.boxes)
        totals["undecided"] += sum(1 for _, _, d in objects if d) - len(s.ignore)
    print(json.dumps({**totals, "teacher": a.model, "cell": a.cell, "floor": a.floor}))


if __name__ == "__main__":
    main()

"""Pictures of where the model errs, for the model card: full-field validation smears with
the expert's cells that were missed (red, thick), false detections (magenta) and correct
ones (thin green). Reads the validation split and `hemocount count --json` output.
Usage: /usr/bin/python3 scripts/error-pictures.py DETECTIONS.json OUT.png [N_IMAGES]"""
import json
import os
import sys

from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training"))
from hemocount_train.data import iou  # noqa: E402

SPLIT = "training/splits/val.json"


def main(dets_path, out, n=4):
    split = json.load(open(SPLIT))
    base = os.path.dirname(os.path.abspath(SPLIT))
    cats = {c["id"]: c["name"] for c in split["categories"]}
    truth = {}
    for im in split["images"]:
        truth[os.path.normpath(os.path.join(base, im["file_name"]))] = (im, [])
    by_id = {im["id"]: os.path.normpath(os.path.join(base, im["file_name"])) for im in split["images"]}
    for a in split["annotations"]:
        x, y, w, h = a["bbox"]
        truth[by_id[a["image_id"]]][1].append((cats[a["category_id"]], [x, y, x + w, y + h]))
    doc = json.load(open(dets_path))
    tiles = []
    for r in doc["images"][:n]:
        path = os.path.normpath(os.path.abspath(r["file"]))
        _, gts = truth[path]
        img = Image.open(path).convert("RGB")
        d = ImageDraw.Draw(img)
        dets = sorted((x for x in r["detections"] if not x["uncertain"]), key=lambda x: -x["score"])
        used = set()
        for det in dets:
            best, bi = 0.5, None
            for gi, (lab, g) in enumerate(gts):
                if gi in used or lab != det["label"]:
                    continue
                v = iou(det["box"], g)
                if v >= best:
                    best, bi = v, gi
            if bi is None:
                d.rectangle(det["box"], outline=(230, 0, 230), width=3)
            else:
                used.add(bi)
                d.rectangle(det["box"], outline=(0, 170, 0), width=1)
        for gi, (_, g) in enumerate(gts):
            if gi not in used:
                d.rectangle(g, outline=(230, 0, 0), width=4)
        tiles.append(img)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (w * 2, h * ((len(tiles) + 1) // 2)), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % 2) * w, (i // 2) * h))
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4)

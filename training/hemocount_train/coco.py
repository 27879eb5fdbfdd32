"""Write samples as COCO JSON (file names relative to the JSON file), the interchange
format the TypeScript evaluator reads."""
from __future__ import annotations

import json
import os

from .data import CLASSES

# Evaluations report each subset separately: whole fields of view and single-cell close-ups
# are different tasks, and mixing them hides the harder one.
SUBSETS = {"full": "full-field", "closeup": "close-up"}


def write_coco(samples, path):
    base = os.path.dirname(os.path.abspath(path))
    doc = {"categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)], "images": [], "annotations": []}
    for i, s in enumerate(samples, 1):
        doc["images"].append({"id": i, "file_name": os.path.relpath(s.image, base), "width": s.width,
                              "height": s.height, "unlabelled": sorted(CLASSES[c] for c in s.unlabelled),
                              **({"subset": SUBSETS[s.source]} if s.source in SUBSETS else {})})
        # undecided cells (VOC difficult) as COCO's iscrowd, which evaluations also leave out
        for (b, l), crowd in [(x, 0) for x in zip(s.boxes, s.labels)] + [(x, 1) for x in s.ignore]:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i, "category_id": l + 1,
                                       "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2),
                                                round(b[3] - b[1], 2)], "area": (b[2] - b[0]) * (b[3] - b[1]),
                                       "iscrowd": crowd})
    os.makedirs(base, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)

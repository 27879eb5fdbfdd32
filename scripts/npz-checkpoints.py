"""Turn the weights a device run brought back (scripts/device-train.py: .npz files, two
epochs each, no optimizer state) into hemocount checkpoints, runs/NAME/epoch_NNN.pt, that
`python3 -m hemocount_train export`, scripts/select-epochs.sh and the release script read.

    python3 scripts/npz-checkpoints.py OUT_DIR weights-1.npz [weights-2.npz ...]"""
import json
import os
import sys

import numpy as np
import torch

out, files = sys.argv[1], sys.argv[2:]
if not files:
    sys.exit(__doc__)
os.makedirs(out, exist_ok=True)
for path in files:
    with np.load(path) as z:
        epochs = sorted({k.split("/")[0] for k in z.files})
        for e in epochs:
            meta = json.loads(str(z[f"{e}/__meta__"]))
            model = {k.split("/", 1)[1]: torch.from_numpy(z[k].copy()) for k in z.files
                     if k.startswith(e + "/") and not k.endswith("/__meta__")}
            dest = os.path.join(out, f"epoch_{meta['epoch']:03d}.pt")
            torch.save({**meta, "model": model}, dest)
            print(f"{path}: epoch {meta['epoch']} -> {dest}")

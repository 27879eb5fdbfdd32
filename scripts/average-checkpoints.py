"""Average the weights of several checkpoints of one run (e.g. its last epochs) into one
checkpoint that `hemocount export` takes. Meant for runs whose BatchNorm statistics are frozen
(fine-tuned from a shipped model), where the average of the weights is a plain mean.
Usage: /usr/bin/python3 scripts/average-checkpoints.py OUT.pt RUN/epoch_010.pt RUN/epoch_011.pt ..."""
import sys

import torch

if len(sys.argv) < 4:
    sys.exit(__doc__)
out, paths = sys.argv[1], sys.argv[2:]
cks = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
if any(c.get("arch") != cks[0].get("arch") for c in cks):
    sys.exit("the checkpoints are of different architectures")
if not all(c.get("frozen_bn") for c in cks):
    print("note: BatchNorm statistics were trained in these runs; their mean may not fit the mean weights",
          file=sys.stderr)
avg = {k: sum(c["model"][k] for c in cks) / len(cks) if v.is_floating_point() else v for k, v in cks[0]["model"].items()}
ck = {k: v for k, v in cks[-1].items() if k not in ("optimizer", "scheduler")}
ck["model"] = avg
ck["averaged"] = paths
torch.save(ck, out)
print(f"{out}: the mean of {len(paths)} checkpoints")

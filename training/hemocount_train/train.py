"""Training loop: random native-resolution crops, smear-appropriate augmentation, AdamW
with warm-up and cosine decay, a checkpoint every epoch and an exact --resume."""
from __future__ import annotations

from dataclasses import asdict, dataclass
import json
import math
import os
import random
import shutil
import statistics
import time

import torch
import torchvision.transforms.functional as TF
from torchvision.ops import roi_align

from .data import CLASSES, Sample, median_cell_px, normalise_class, open_rgb, rbc_sides
from .model import DARK_LEVEL, build_model, count_parameters, load_backbone_weights, load_init

RARE = (CLASSES.index("WBC"), CLASSES.index("Platelets"))
NC = len(CLASSES)


def load_rgb(path: str, white_balance=False) -> torch.Tensor:
    img = TF.pil_to_tensor(open_rgb(path))  # uint8 CHW, as hemocount counts it (EXIF turned, alpha on white)
    return white_balanced(img) if white_balance else img


def background_colour(img: torch.Tensor, step=4):
    """The twin of src/core/pipeline.ts backgroundColour: per-channel lower median of the
    brightest quarter (integer luminance) of every step-th pixel, uint8 CHW in."""
    sub = img[:, step // 2::step, step // 2::step].reshape(3, -1).long()
    sub = sub[:, ~(sub < DARK_LEVEL).all(dim=0)]  # lit pixels only: an unlit margin would push cells into the quarter
    if sub.shape[1] == 0:
        return None
    lum = torch.div(299 * sub[0] + 587 * sub[1] + 114 * sub[2] + 500, 1000, rounding_mode="floor")
    t = torch.sort(lum).values[int(0.75 * lum.numel())]
    top = sub[:, lum >= t]
    return [int(torch.sort(top[c]).values[(top.shape[1] - 1) // 2]) for c in range(3)]


def white_balanced(img: torch.Tensor) -> torch.Tensor:
    """The image with its background made grey (the twin of whiteBalanceGains + applyGains)."""
    bg = background_colour(img)
    if bg is None:
        return img
    mean = sum(bg) / 3
    out = img.clone()
    for c in range(3):
        g = min(1.6, max(0.6, mean / max(1, bg[c])))
        lut = torch.tensor([min(255, math.floor(v * g + 0.5)) for v in range(256)], dtype=torch.uint8)
        out[c] = lut[img[c].long()]
    return out


class CropDataset:
    """Deterministic augmentation: item (epoch, i) always yields the same crop, so a
    resumed run replays exactly what an uninterrupted one would have seen."""

    def __init__(self, samples: list[Sample], crop=384, seed=0, augment=True, scale=(0.6, 1.6), copy_paste=0.0, stain=1.0,
                 noise=0.0, cast=0.0, white_balance=False):
        self.samples, self.crop, self.seed, self.augment, self.scale = samples, crop, seed, augment, scale
        self.copy_paste, self.stain, self.noise, self.cast = copy_paste, stain, noise, cast
        self.white_balance = white_balance
        self.cache: dict = {}
        self._bank, self._rbc = None, {}

    def bank(self):
        """(image index, box) of every white cell and platelet from an image whose labels
        of that class are complete: the cells copy-paste may copy."""
        if self._bank is None:
            self._bank = {c: [(i, b) for i, s in enumerate(self.samples) for b, k in zip(s.boxes, s.labels)
                              if k == c and c not in s.incomplete and c not in s.unlabelled
                              and min(b[2] - b[0], b[3] - b[1]) >= 8 and self.rbc_size(i)]
                          for c in RARE}
        return self._bank

    def rbc_size(self, i):
        """Median red-cell box side of image i: its magnification, so a cell pasted from
        a close-up into a full field arrives at the size it would have there."""
        if i not in self._rbc:
            sides = rbc_sides(self.samples[i])
            self._rbc[i] = statistics.median_high(sides) if len(sides) >= 3 else None
        return self._rbc[i]

    def image(self, i):
        if i not in self.cache:
            self.cache[i] = load_rgb(self.samples[i].image, self.white_balance)
        return self.cache[i]

    def get(self, i, epoch):
        s = self.samples[i]
        rng = random.Random((self.seed * 1_000_003 + epoch) * 100_003 + i)
        img = self.image(i).float() / 255.0
        boxes, labels = boxes_and_labels(s)
        if self.augment:
            # scale jitter, log-uniform: magnifications differ between microscopes; with
            # `count --scale auto` rescaling to the training scale, this keeps the first
            # (size-estimating) pass reliable on cells 0.5-2x the training size
            f = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
            img, boxes, labels = self._scaled_crop(img, boxes, labels, f, rng)
            if self.copy_paste and rng.random() < self.copy_paste:
                img, boxes, labels = self._paste(img, boxes, labels, f, i, rng)
            if rng.random() < 0.5:
                img = img.flip(-1)
                boxes = torch.stack([img.shape[2] - boxes[:, 2], boxes[:, 1], img.shape[2] - boxes[:, 0], boxes[:, 3]], 1)
            if rng.random() < 0.5:
                img = img.flip(-2)
                boxes = torch.stack([boxes[:, 0], img.shape[1] - boxes[:, 3], boxes[:, 2], img.shape[1] - boxes[:, 1]], 1)
            if rng.random() < 0.5:  # 90-degree rotation (transpose + flip = rot90)
                img = img.transpose(1, 2)
                boxes = boxes[:, [1, 0, 3, 2]]
            # stain jitter: smears vary in stain intensity, hue and illumination
            k = self.stain
            img = TF.adjust_brightness(img, rng.uniform(max(0.1, 1 - 0.25 * k), 1 + 0.25 * k))
            img = TF.adjust_contrast(img, rng.uniform(max(0.1, 1 - 0.25 * k), 1 + 0.25 * k))
            img = TF.adjust_saturation(img, rng.uniform(max(0.0, 1 - 0.3 * k), 1 + 0.3 * k))
            img = hue_rotate(img, rng.uniform(-0.05 * k, 0.05 * k))
            # wider jitter also shows grey crops (monochrome cameras); drawn only then, so that
            # runs at the default jitter keep their random stream
            if k > 1 and rng.random() < 0.05 * (k - 1):
                img = TF.rgb_to_grayscale(img, 3)
            if rng.random() < 0.2:  # defocus: focus varies across a smear and between slides
                k = rng.choice((3, 5))
                img = TF.gaussian_blur(img, [k, k], [rng.uniform(0.5, 1.5)] * 2)
            # the lamp's colour, not white-balanced (a warm halogen lamp, a cool LED): a gain per
            # channel, red and blue up to x(1 + cast) or down as far, green a third of that. The
            # hue rotation above keeps grey grey, and the BCCD fields' backgrounds are all grey,
            # so without this a tinted full field lost most of its platelets (stain-sweep.py
            # --set light). Drawn only when asked, so that runs without it keep their random stream
            if self.cast and rng.random() < 0.5:
                w = math.log1p(self.cast)
                g = [math.exp(rng.uniform(-w * f, w * f)) for f in (1.0, 1 / 3, 1.0)]
                img = img * torch.tensor(g, dtype=img.dtype).view(3, 1, 1)
            # sensor noise (another camera, less light): drawn only when asked, so that runs
            # without it keep their random stream
            if self.noise and rng.random() < 0.5:
                g = torch.Generator().manual_seed(rng.randrange(2 ** 31))
                img = img + torch.randn(img.shape, generator=g) * rng.uniform(0.0, self.noise)
            img = img.clamp(0, 1)
        return img, target(boxes.reshape(-1, 4), labels, s)

    def _scaled_crop(self, img, boxes, labels, f, rng):
        """A random crop of the image scaled by f, sampled straight from the source pixels
        (roi_align: bilinear at each output pixel's centre, as interpolate-then-crop would be)
        rather than scaling the whole image first: the same pixels at a fraction of the cost."""
        h, w = img.shape[1:]
        nh, nw = max(32, round(h * f)), max(32, round(w * f))
        fy, fx = nh / h, nw / w
        ch, cw = min(self.crop, nh), min(self.crop, nw)
        y0, x0 = rng.randint(0, nh - ch), rng.randint(0, nw - cw)
        region = torch.tensor([[0, x0 / fx, y0 / fy, (x0 + cw) / fx, (y0 + ch) / fy]], dtype=torch.float32)
        img = roi_align(img[None], region, (ch, cw), spatial_scale=1.0, sampling_ratio=1, aligned=True)[0]
        if len(boxes) == 0:
            return img, boxes, labels
        b = boxes * torch.tensor([fx, fy, fx, fy]) - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        c = torch.stack([b[:, 0].clamp(0, cw), b[:, 1].clamp(0, ch), b[:, 2].clamp(0, cw), b[:, 3].clamp(0, ch)], 1)
        carea = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
        # a cell cut by the crop edge stays a target while most of it is visible, the way
        # annotators box cells cut by the image border (keeping it while a fifth of its width
        # is visible, as the complete labels box border slivers, gained nothing beyond noise
        # in a controlled 8-epoch comparison: models/LIMITS.md). A smaller visible part is
        # not taught as background either (experts box some border slivers): it becomes an
        # undecided cell, as does any undecided cell still in view.
        seen = (c[:, 2] - c[:, 0] >= 1) & (c[:, 3] - c[:, 1] >= 1)
        keep = (carea >= 0.35 * area) & (c[:, 2] - c[:, 0] >= 4) & (c[:, 3] - c[:, 1] >= 4) & (labels < NC)
        labels = torch.where(keep | (labels >= NC), labels, labels % NC + NC)
        return img, c[seen], labels[seen]

    def _paste(self, img, boxes, labels, f, i_dest, rng, tries=12):
        """Copy-paste for the rare classes (platelets: ~1 per crop, white cells: fewer):
        1-3 cells from other images, at this crop's scale, where they hide no labelled
        cell, blended through a soft ellipse so no rectangle edge teaches the model a cue."""
        bank, dest = self.bank(), self.rbc_size(i_dest)
        h, w = img.shape[1:]
        new_b, new_l = [], []
        for _ in range(rng.randint(1, 3)):
            c = RARE[rng.random() < 0.6]  # platelets, the weaker class, a little more often
            if not bank[c] or not dest:
                continue
            i, (x0, y0, x1, y1) = bank[c][rng.randrange(len(bank[c]))]
            src = self.image(i)
            f_cell = f * dest / self.rbc_size(i)
            m = 0.15  # a margin of the cell's own surroundings, faded out by the mask
            bw, bh = x1 - x0, y1 - y0
            sx0, sy0 = max(0, int(x0 - m * bw)), max(0, int(y0 - m * bh))
            sx1, sy1 = min(src.shape[2], int(math.ceil(x1 + m * bw))), min(src.shape[1], int(math.ceil(y1 + m * bh)))
            pw, ph = max(4, round((sx1 - sx0) * f_cell)), max(4, round((sy1 - sy0) * f_cell))
            if pw >= w or ph >= h:
                continue
            patch = torch.nn.functional.interpolate(src[None, :, sy0:sy1, sx0:sx1].float() / 255.0, (ph, pw),
                                                    mode="bilinear", align_corners=False)[0]
            cell = torch.tensor([x0 - sx0, y0 - sy0, x1 - sx0, y1 - sy0]) * torch.tensor([pw / (sx1 - sx0), ph / (sy1 - sy0)] * 2)
            occupied = torch.cat([boxes.reshape(-1, 4), torch.tensor(new_b).reshape(-1, 4)])
            for _ in range(tries):
                px, py = rng.randint(0, w - pw), rng.randint(0, h - ph)
                nb = cell + torch.tensor([px, py, px, py])
                if len(occupied) == 0 or not _overlaps(nb, occupied):
                    break
            else:
                continue
            yy = torch.linspace(-1, 1, ph)[:, None]
            xx = torch.linspace(-1, 1, pw)[None, :]
            alpha = ((1 - (xx ** 2 + yy ** 2)) / 0.3).clamp(0, 1)  # 1 inside, fading at the rim
            region = img[:, py:py + ph, px:px + pw]
            img[:, py:py + ph, px:px + pw] = region * (1 - alpha) + patch * alpha
            new_b.append(nb.tolist())
            new_l.append(c)
        if new_b:
            boxes = torch.cat([boxes.reshape(-1, 4), torch.tensor(new_b)])
            labels = torch.cat([labels, torch.tensor(new_l, dtype=torch.int64)])
        return img, boxes, labels


def hue_rotate(img, turns):
    """Hue shift by a rotation about the grey axis of RGB space: a 3x3 matrix, where the
    HSV round trip of adjust_hue cost half of the whole augmentation's time."""
    a = 2 * math.pi * turns
    c, k, r = math.cos(a), (1 - math.cos(a)) / 3, math.sin(a) / math.sqrt(3)
    m = torch.tensor([[c + k, k - r, k + r], [k + r, c + k, k - r], [k - r, k + r, c + k]], dtype=img.dtype)
    return (m @ img.reshape(3, -1)).reshape(img.shape)


def _overlaps(box, boxes, margin=2.0):
    return bool(((box[0] < boxes[:, 2] + margin) & (box[2] > boxes[:, 0] - margin) &
                 (box[1] < boxes[:, 3] + margin) & (box[3] > boxes[:, 1] - margin)).any())


def boxes_and_labels(s: Sample):
    """A sample's cells and undecided cells as one box tensor; undecided ones carry label + NC,
    so that every geometric step of the augmentation moves them too (target() splits them)."""
    boxes = torch.tensor(s.boxes + [b for b, _ in s.ignore], dtype=torch.float32).reshape(-1, 4)
    return boxes, torch.tensor(s.labels + [k + NC for _, k in s.ignore], dtype=torch.int64)


def target(boxes, labels, s: Sample) -> dict:
    """The detector's target: cells (labels < NC) and undecided cells (label - NC) apart."""
    cell = labels < NC
    return {"boxes": boxes[cell], "labels": labels[cell], "ignore_boxes": boxes[~cell],
            "ignore_labels": labels[~cell] - NC, **class_masks(s)}


def class_masks(s: Sample) -> dict:
    return {"ignore_classes": torch.tensor([c in s.unlabelled for c in range(len(CLASSES))]),
            "incomplete_classes": torch.tensor([c in s.incomplete for c in range(len(CLASSES))])}


class RunItems(torch.utils.data.Dataset):
    """Position -> augmented item for the whole run: (epoch, image) pairs in training order.
    One DataLoader serves every epoch, so its worker processes (and their decoded-image
    caches) live for the run and keep preparing batches while the device validates."""

    def __init__(self, ds: CropDataset, pairs: list[tuple[int, int]]):
        self.ds, self.pairs = ds, pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        epoch, i = self.pairs[k]
        return self.ds.get(i, epoch)


def _save(obj, path):
    """torch.save through a temporary file: a kill mid-save never leaves a truncated checkpoint."""
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def _keep_best(out_dir, epoch):
    """best.pt = epoch's checkpoint, replaced atomically."""
    src = os.path.join(out_dir, f"epoch_{epoch:03d}.pt")
    if os.path.isfile(src):
        shutil.copyfile(src, os.path.join(out_dir, "best.pt.tmp"))
        os.replace(os.path.join(out_dir, "best.pt.tmp"), os.path.join(out_dir, "best.pt"))


def best_epoch(path):
    """(epoch, validation F1) of the log's best-scoring epoch (the earliest of equals), or None."""
    if not os.path.isfile(path):
        return None
    scored = [(r["epoch"], r["val_f1"]) for r in map(json.loads, open(path, encoding="utf-8"))
              if r.get("type") == "epoch" and r.get("val_f1") is not None]
    return max(scored, key=lambda e: (e[1], -e[0])) if scored else None


def class_weights(spec: str) -> list[float]:
    """'Platelets=2' (or 'WBC=1.5,Platelets=2') -> one weight per class, 1 where not named."""
    w = {c: 1.0 for c in CLASSES}
    for part in spec.split(","):
        name, _, v = part.partition("=")
        c = normalise_class(name.strip())
        try:
            x = float(v)
        except ValueError:
            x = -1.0
        if c is None or not (0 < x <= 100):
            raise ValueError(f"class weight '{part}': give CLASS=WEIGHT with a class of {', '.join(CLASSES)} "
                             "and a weight above 0")
        w[c] = x
    return [w[c] for c in CLASSES]


def machine() -> str:
    """The CPU as bench/smears.ts names it (model, family/model numbers, widest vector
    extension, cores): hosts of one kind differ, and the model card states where a model trained."""
    import platform
    cpu, extra = platform.processor() or platform.machine(), ""
    try:
        info = open("/proc/cpuinfo", encoding="utf-8").read()
        field = {}
        for line in info.splitlines():
            k, _, v = line.partition(":")
            field.setdefault(k.strip(), v.strip())
        flags = set(field.get("flags", "").split())
        isa = next((n for f, n in (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx_vnni", "AVX-VNNI"),
                                   ("avx2", "AVX2")) if f in flags), "")
        cpu = field.get("model name", cpu)
        if field.get("cpu family") and field.get("model"):
            extra = f" (family {field['cpu family']} model {field['model']}{', ' + isa if isa else ''})"
    except OSError:
        pass
    return f"{cpu}{extra}, {os.cpu_count()} cores"


def _truncate_log(path, epoch):
    """Drop the records of the epoch a kill interrupted (and any half-written line): the
    resumed run writes that epoch again."""
    if not os.path.isfile(path):
        return
    keep = []
    for line in open(path, encoding="utf-8"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("epoch", 0) <= epoch:
            keep.append(json.dumps(rec))
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(k + "\n" for k in keep))
    os.replace(path + ".tmp", path)


def autocast_networks(model, device_type="cuda"):
    """bfloat16 for the convolutions only: autocast around the whole RetinaNet would make
    its anchors bfloat16 too (they take the feature maps' dtype), a few pixels off at 640 px,
    and the matching and box targets with them. Instance-level forwards keep state_dict keys."""
    for part in (model.backbone, model.head):
        def forward(*a, _orig=part.forward):
            with torch.autocast(device_type, dtype=torch.bfloat16):
                out = _orig(*a)
            return type(out)((k, v.float()) for k, v in out.items())
        part.forward = forward


def set_bn_eval(model):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


@torch.no_grad()
def validation_loss(model, samples, crop_cache, device="cpu", batch=8, white_balance=False):
    """Mean losses on the whole validation images (no augmentation), BN in eval mode.
    Images of one size go through together (no padding changes a loss), batch at a time."""
    model.train()
    set_bn_eval(model)
    tot = {"classification": 0.0, "bbox_regression": 0.0}
    by_size: dict = {}
    for i, s in enumerate(samples):
        if i not in crop_cache:
            crop_cache[i] = load_rgb(s.image, white_balance)
        by_size.setdefault(tuple(crop_cache[i].shape), []).append(i)
    for idx in by_size.values():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            imgs = [(crop_cache[i].float() / 255.0).to(device) for i in part]
            tgts = [target(*boxes_and_labels(samples[i]), samples[i]) for i in part]
            losses = model(imgs, [{kk: v.to(device) for kk, v in t.items()} for t in tgts])
            for kk in tot:  # the heads average over the batch's images
                tot[kk] += float(losses[kk]) * len(part)
    n = max(1, len(samples))
    return {"val_loss_cls": tot["classification"] / n, "val_loss_box": tot["bbox_regression"] / n,
            "val_loss": (tot["classification"] + tot["bbox_regression"]) / n}


@dataclass
class TrainConfig:
    """Everything that defines a run: saved whole in every checkpoint, restored by --resume."""
    data: str | None = None          # None: ../shared/datasets with hemocount's split
    val: str | None = None
    split: str | None = None         # a YOLO set of data (labels/<split>/, or a set data.yaml names)
    val_split: str | None = None     # and of val
    relabel: str | None = None       # VOC files completing training images' labels
    oversample: str | None = None    # e.g. "full=3"
    arch: str = "compact"
    head_norm: str = "none"
    box_loss: str = "l1"             # or giou
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    crop: int = 384
    scale: tuple = (0.6, 1.6)        # log-uniform scale jitter
    seed: int = 0
    init: str | None = None
    backbone_weights: str | None = None
    freeze_backbone: bool = False
    max_steps_per_epoch: int | None = None
    copy_paste: float = 0.0          # probability that a crop gets 1-3 pasted WBC/platelets
    stain: float = 1.0               # stain jitter's width, times the default
    class_weight: str | None = None  # classification loss weight per class, e.g. "Platelets=2"
    noise: float = 0.0               # sensor noise on half the crops: Gaussian, sigma up to this (of full scale)
    cast: float = 0.0                # lamp colour on half the crops: red and blue gains up to x(1 + cast) or down as far
    white_balance: bool = False      # every image's background made grey, here and where the model counts
    patience: int | None = None      # stop after this many epochs without a better validation F1

    # may differ on --resume: training longer is what resuming is for
    RESUMABLE = ("epochs", "patience")

    @classmethod
    def from_checkpoint(cls, ck: dict) -> "TrainConfig":
        saved = ck.get("config")
        if saved is None:  # checkpoints of earlier releases kept loose keys
            saved = {k: ck[k] for k in ("arch", "head_norm", "epochs", "batch_size", "lr", "crop", "seed", "init") if k in ck}
        saved = {k: (tuple(v) if k == "scale" else v) for k, v in saved.items() if k in cls.__dataclass_fields__}
        return cls(**saved)

    def conflicts(self, given: dict) -> list[str]:
        """The explicitly given settings that contradict this (saved) configuration."""
        out = []
        for k, v in given.items():
            if k in self.RESUMABLE or v is None or k not in self.__dataclass_fields__:
                continue
            mine = getattr(self, k)
            if (tuple(v) if k == "scale" else v) != mine:
                out.append(f"{k}: the run has {mine!r}, this command asks {v!r}")
        return out


def train(cfg: TrainConfig, train_samples, val_samples, out_dir, resume=False, device="cpu", log=print, threads=None,
          split_info=None, workers=0, amp=False, epoch_score=None):
    """epoch_score(checkpoint path) -> {"val_f1": ...}: scores each epoch on the validation
    data (hemocount's own evaluation); with cfg.patience, training stops once that many
    epochs in a row have not beaten the best, and best.pt is the best epoch's checkpoint."""
    arch, epochs, batch_size, lr, crop, seed = cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.crop, cfg.seed
    head_norm, init, scale, max_steps_per_epoch = cfg.head_norm, cfg.init, cfg.scale, cfg.max_steps_per_epoch
    backbone_weights, freeze_backbone = cfg.backbone_weights, cfg.freeze_backbone
    if cfg.patience is not None and (cfg.patience < 1 or epoch_score is None):
        raise ValueError("patience must be a whole number >= 1, and needs an epoch_score to stop on")
    os.makedirs(out_dir, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(arch, head_norm=head_norm, box_loss=cfg.box_loss)
    if cfg.class_weight:
        model.head.classification_head.class_weight = torch.tensor(class_weights(cfg.class_weight))
    if backbone_weights:
        n, _ = load_backbone_weights(model, backbone_weights, freeze_backbone)
        log(f"loaded {n} backbone tensors from {backbone_weights}{' (frozen)' if freeze_backbone else ''}")
    frozen_bn = False
    if init and not resume:
        frozen_bn = load_init(model, init)
        log(f"initialised from {init}{' (BatchNorm folded: statistics frozen)' if frozen_bn else ''}")
    model.to(device)
    amp = amp and str(device).startswith("cuda")
    if amp:
        autocast_networks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ds = CropDataset(train_samples, crop=crop, seed=seed, scale=scale, copy_paste=cfg.copy_paste, stain=cfg.stain,
                     noise=cfg.noise, cast=cfg.cast, white_balance=cfg.white_balance)
    steps_per_epoch = math.ceil(len(train_samples) / batch_size)
    cell_px = median_cell_px(train_samples)  # the data's magnification, for the exported --scale auto band
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total = steps_per_epoch * epochs
    warmup = min(300, total // 10 + 1)
    start_epoch = 0
    ckpt_path = os.path.join(out_dir, "last.pt")
    log_path = os.path.join(out_dir, "train_log.jsonl")
    if resume:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"{ckpt_path}: no checkpoint to resume from")
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch = ck["epoch"]
        frozen_bn = bool(ck.get("frozen_bn", False))
        log(f"resuming {ckpt_path} after epoch {start_epoch}")
        _truncate_log(log_path, start_epoch)
        if start_epoch >= epochs:
            log("training already complete")
            return model
        best = best_epoch(log_path)
        if best:  # a kill may have come between an epoch's record and its best.pt
            _keep_best(out_dir, best[0])
        if cfg.patience and best and start_epoch - best[0] >= cfg.patience:
            log(f"training stopped early at epoch {start_epoch} (best: epoch {best[0]}, validation F1 {best[1]}); "
                "a larger --patience continues it")
            return model
    else:  # a fresh run starts a fresh log (--resume appends) and has no best epoch yet
        for stale in (log_path, os.path.join(out_dir, "best.pt")):
            if os.path.exists(stale):
                os.remove(stale)
    logf = open(log_path, "a", encoding="utf-8")
    # where this (part of the) run trained: a resumed run may continue on another machine
    logf.write(json.dumps({"type": "run", "epoch": start_epoch, "machine": machine(), "device": str(device),
                           "torch": torch.__version__, "threads": torch.get_num_threads()}) + "\n")
    log(f"{arch}: {count_parameters(model):,} parameters; {len(train_samples)} train / {len(val_samples)} "
        f"validation images; {steps_per_epoch} steps x {epochs} epochs, batch {batch_size}, crop {crop}")
    val_cache: dict = {}
    pairs, batches = [], []
    for epoch in range(start_epoch, epochs):
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(train_samples), generator=g).tolist()[:steps_per_epoch * batch_size]
        batches += [list(range(len(pairs) + k, len(pairs) + min(k + batch_size, len(order))))
                    for k in range(0, len(order), batch_size)]
        pairs += [(epoch, i) for i in order]
    loader = iter(torch.utils.data.DataLoader(RunItems(ds, pairs), batch_sampler=batches, num_workers=workers,
                                              collate_fn=list, pin_memory=str(device).startswith("cuda"),
                                              **({"prefetch_factor": 4} if workers else {})))
    for epoch in range(start_epoch, epochs):
        model.train()
        if freeze_backbone:
            model.backbone.body.eval()
        if frozen_bn:
            set_bn_eval(model)
        sums = {"loss_cls": 0.0, "loss_box": 0.0, "loss": 0.0}
        t_epoch = time.time()
        for k in range(steps_per_epoch):
            step = epoch * steps_per_epoch + k
            t0 = time.time()
            items = next(loader)
            imgs = [im.to(device, non_blocking=True) for im, _ in items]
            tgts = [{kk: v.to(device, non_blocking=True) for kk, v in t.items()} for _, t in items]
            cur_lr = lr_at(step, total, lr, warmup)
            for gp in opt.param_groups:
                gp["lr"] = cur_lr
            losses = model(imgs, tgts)
            loss = losses["classification"].float() + losses["bbox_regression"].float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            dt = time.time() - t0
            rec = {"type": "step", "epoch": epoch + 1, "step": step + 1,
                   "loss_cls": round(losses["classification"].item(), 5),
                   "loss_box": round(losses["bbox_regression"].item(), 5),
                   "loss": round(loss.item(), 5), "lr": cur_lr, "time": round(dt, 4),
                   "images_per_s": round(len(imgs) / dt, 2)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()  # a kill loses no step; --resume drops the interrupted epoch's records
            for kk in sums:
                sums[kk] += rec[kk]
        n = steps_per_epoch
        rec = {"type": "epoch", "epoch": epoch + 1, **{k: round(v / n, 5) for k, v in sums.items()},
               "lr": cur_lr, "time": round(time.time() - t_epoch, 1),
               "images_per_s": round(n * batch_size / (time.time() - t_epoch), 2)}
        if val_samples:
            rec.update({k: round(v, 5) for k, v in validation_loss(model, val_samples, val_cache, device, white_balance=cfg.white_balance).items()})
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                 "config": asdict(cfg), "arch": arch, "head_norm": head_norm, "frozen_bn": frozen_bn, "init": init,
                 "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "crop": crop,
                 "split": split_info or {}, "train_images": len(train_samples), "cell_px": cell_px}
        epoch_path = os.path.join(out_dir, f"epoch_{epoch + 1:03d}.pt")
        _save(state, epoch_path)
        if epoch_score:
            with torch.random.fork_rng(devices=[]):  # scoring must not move the run's random state
                rec.update(epoch_score(epoch_path))
        # record, best.pt, then last.pt: a kill before last.pt replays this epoch on --resume
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        log(json.dumps(rec))
        best = best_epoch(log_path)
        if best and best[0] == epoch + 1:
            _keep_best(out_dir, epoch + 1)
        _save(state, ckpt_path)
        if cfg.patience and best and epoch + 1 - best[0] >= cfg.patience:
            log(f"no better validation F1 for {cfg.patience} epochs: stopping after epoch {epoch + 1} "
                f"(best: epoch {best[0]}, validation F1 {best[1]}, {os.path.join(out_dir, 'best.pt')})")
            break
    logf.close()
    return model

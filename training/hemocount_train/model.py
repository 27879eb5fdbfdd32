"""RetinaNet built from torchvision's parts: a backbone with a feature pyramid (P3-P7),
a classification and a box-regression subnet shared across levels, focal loss.

Configurations (ARCHS):
  resnet50     - the paper's: ResNet-50 + FPN(256), 4 convs of 256 channels per subnet.
  compact      - a narrow residual backbone (C3-C5: 48, 96, 160 channels), FPN(64),
                 2 convs per subnet: 5.4 GFLOP at 640x480.
  compact-wide - the same with C3-C5 at 64, 128, 256 channels: 7.4 GFLOP, twice the
                 backbone parameters. --init from a compact model widens it without
                 changing what it computes (widen_state).
Both train from scratch with trainable BatchNorm in the backbone and no normalisation in
the shared heads (no ImageNet weights can be downloaded here); --backbone-weights and
--freeze-backbone give the paper's transfer-learning recipe, --init fine-tunes a model."""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou, sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from .data import CLASSES

# Cells are round: aspect ratios near 1 suffice. Measured on the shared data at
# 640x480: platelets ~30-40 px, RBC ~80-120 px, WBC ~150-230 px (model card).
ANCHOR_SIZES = ((24,), (48,), (96,), (192,), (384,))
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ASPECT_RATIOS = (0.7, 1.0, 1.4)
STRIDES = (8, 16, 32, 64, 128)
PAD_MULTIPLE = 128  # pad so every level's stride is exact (anchor parity with torchvision)
# near an undecided cell, anchors at IoU >= the matcher's background threshold get no
# "not this class" loss (those that a real cell there would not have taught background),
# and so do anchors centred inside it: a sliver cut by a crop edge overlaps no anchor at 0.4
UNDECIDED_IOU = 0.4
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def anchor_generator():
    sizes = tuple(tuple(s * k for k in ANCHOR_SCALES) for (s,) in ANCHOR_SIZES)
    return AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))


DARK_LEVEL = 40  # src/core/pipeline.ts DARK_LEVEL


class NativeTransform(GeneralizedRCNNTransform):
    """torchvision's transform without the resize: the network is fully convolutional and
    sees cells at their native pixel size, which is what the anchors are sized for."""

    def resize(self, image, target=None):
        return image, target

    def normalize(self, image):
        # as hemocount's toTensor: a pixel dark in all three channels (unlit: black margins of
        # scanned, stitched or vignetted fields) becomes padding, the mean colour
        dark = (image < DARK_LEVEL / 255).all(dim=0)
        return super().normalize(image).masked_fill(dark, 0.0)


def conv_bn(cin, cout, stride=1, k=3):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """ResNet basic block."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = conv_bn(cin, cout, stride)
        self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.b(self.a(x)) + self.skip(x))


class CompactBackbone(nn.Module):
    """Strides 2-4-8-16-32; returns C3, C4, C5 like a ResNet body (and the stride-4 C2
    first with c2=True: a candidate pyramid level for small cells, see arch_candidates)."""

    def __init__(self, widths=(16, 32, 48, 96, 160), c2=False):
        super().__init__()
        w = widths
        self.stem = nn.Sequential(conv_bn(3, w[0], 2), conv_bn(w[0], w[1], 2))
        self.layer2 = nn.Sequential(Block(w[1], w[2], 2), Block(w[2], w[2], 1))
        self.layer3 = nn.Sequential(Block(w[2], w[3], 2), Block(w[3], w[3], 1))
        self.layer4 = nn.Sequential(Block(w[3], w[4], 2), Block(w[4], w[4], 1))
        self.c2 = c2
        self.channels = w[1:] if c2 else w[2:]

    def forward(self, x):
        c2 = self.stem(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return (c2, c3, c4, self.layer4(c4)) if self.c2 else (c3, c4, self.layer4(c4))


class ResNet50Body(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50
        r = resnet50(weights=None)  # trainable BatchNorm; never downloads
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.layer2, self.layer3, self.layer4 = r.layer2, r.layer3, r.layer4
        self.channels = (512, 1024, 2048)

    def forward(self, x):
        c3 = self.layer2(self.stem(x))
        c4 = self.layer3(c3)
        return c3, c4, self.layer4(c4)


class BackboneWithFPN(nn.Module):
    def __init__(self, body, fpn_channels):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.channels), fpn_channels,
                                         extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
        self.out_channels = fpn_channels

    def forward(self, x):
        feats = self.body(x)
        return self.fpn(OrderedDict((f"p{i + 6 - len(feats)}", f) for i, f in enumerate(feats)))


class MaskedHead(RetinaNetHead):
    """torchvision's head; its loss also learns where each image's undecided cells are
    ('ignore_boxes', 'ignore_labels': cells nobody has confirmed either way)."""

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        for tgt, a in zip(targets, anchors):
            ib = tgt.get("ignore_boxes")
            if ib is not None and len(ib):
                # an anchor that would not count as background next to a real cell there
                # (IoU >= the background threshold), or centred on the cell, is not taught
                # "not this class"
                cx, cy = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
                inside = ((cx[None] >= ib[:, 0:1]) & (cx[None] <= ib[:, 2:3]) &
                          (cy[None] >= ib[:, 1:2]) & (cy[None] <= ib[:, 3:4]))
                near = (box_iou(ib, a) >= UNDECIDED_IOU) | inside
                mask = torch.zeros(len(a), self.classification_head.num_classes, dtype=torch.bool, device=a.device)
                for c in tgt["ignore_labels"].unique().tolist():
                    mask[:, c] = near[tgt["ignore_labels"] == c].any(0)
                tgt["ignore_anchors"] = mask
        return super().compute_loss(targets, head_outputs, anchors, matched_idxs)


class MaskedClassificationHead(RetinaNetClassificationHead):
    """torchvision's focal-loss head, plus masks per target:
    'ignore_classes': the class contributes no loss on that image (not labelled at all);
    'incomplete_classes': the class's boxes are positives, but anchors matched to none of
    them are not taught "not this class" (the labels leave some such cells unboxed);
    'ignore_anchors' (anchors x classes, from MaskedHead): near an undecided cell, an
    anchor matched to no cell is not taught "not this class"."""

    class_weight = None  # per-class loss weights (train --class-weight), a tensor of num_classes

    def compute_loss(self, targets, head_outputs, matched_idxs):
        losses = []
        cls_logits = head_outputs["cls_logits"]
        for tgt, logits, matched in zip(targets, cls_logits, matched_idxs):
            fg = torch.where(matched >= 0)[0]
            gt = torch.zeros_like(logits)
            gt[fg, tgt["labels"][matched[fg]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            loss = sigmoid_focal_loss(logits[valid], gt[valid], reduction="none")
            ign = tgt.get("ignore_classes")
            if ign is not None and ign.any():
                loss = loss * (~ign).to(loss.dtype)[None, :]
            inc = tgt.get("incomplete_classes")
            if inc is not None and inc.any():
                loss = loss * ~(inc[None, :] & (gt[valid] == 0))
            near = tgt.get("ignore_anchors")
            if near is not None:
                loss = loss * ~(near[valid] & (gt[valid] == 0))
            if self.class_weight is not None:  # a rare class's classifier gets a larger share of the gradient
                loss = loss * self.class_weight.to(loss)[None, :]
            losses.append(loss.sum() / max(1, fg.numel()))
        return sum(losses) / len(targets)


# name -> (backbone widths (stem, stem, C3, C4, C5) or None for ResNet-50, FPN channels, convs per subnet)
ARCHS = {
    "compact": ((16, 32, 48, 96, 160), 64, 2),
    "compact-wide": ((16, 32, 64, 128, 256), 64, 2),
    "resnet50": (None, 256, 4),
}


def build_model(arch="compact", num_classes=len(CLASSES), head_norm="none", shape=None, box_loss="l1"):
    """shape: (widths, FPN channels, convs per subnet, stride-4 level) in place of ARCHS[arch]'s,
    for the architecture candidates (export.arch_candidates), which are timed, not trained."""
    if shape is None and arch not in ARCHS:
        raise ValueError(f"unknown architecture '{arch}' ({', '.join(ARCHS)})")
    widths, fpn_ch, head_convs, c2 = shape or (*ARCHS[arch], False)
    body = ResNet50Body() if widths is None else CompactBackbone(widths, c2=c2)
    backbone = BackboneWithFPN(body, fpn_ch)
    anchors = anchor_generator()
    A = anchors.num_anchors_per_location()[0]
    # The subnets are shared by all pyramid levels, whose feature statistics differ:
    # BatchNorm there blends the levels' running statistics and breaks eval mode, and
    # GroupNorm normalises over the whole feature map, so a cell's score would depend on
    # the rest of the image (tiles and whole images would disagree). Default: no norm in
    # the heads, as in the original RetinaNet; 'group' is torchvision's v2 choice.
    norm = partial(nn.GroupNorm, 8) if head_norm == "group" else None
    if head_norm not in ("none", "group"):
        raise ValueError(f"unknown head norm '{head_norm}' (none or group)")
    head = MaskedHead(fpn_ch, A, num_classes, norm_layer=norm)
    head.classification_head = MaskedClassificationHead(fpn_ch, A, num_classes, norm_layer=norm)
    if box_loss not in ("l1", "giou"):
        raise ValueError(f"unknown box loss '{box_loss}' (l1 or giou)")
    # giou: the regression is trained on the overlap that matching at IoU 0.5 scores
    # (torchvision's RetinaNet v2 recipe); l1 on the encoded offsets is the original's
    head.regression_head._loss_type = box_loss
    if head_convs != 4:
        for sub in (head.classification_head, head.regression_head):
            sub.conv = sub.conv[:head_convs]
    model = RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head,
                      # NMS at IoU 0.4, not torchvision's 0.5: in crowded fields 0.5 let second
                      # boxes on one red cell through (chosen on validation at an intermediate epoch)
                      score_thresh=0.05, nms_thresh=0.4, detections_per_img=1000, topk_candidates=1000,
                      fg_iou_thresh=0.5, bg_iou_thresh=0.4)
    model.transform = NativeTransform(1, 10 ** 5, list(MEAN), list(STD), size_divisible=PAD_MULTIPLE)
    model.arch = arch
    model.head_norm = head_norm
    model.head_convs = head_convs
    return model


def load_backbone_weights(model, path, freeze=False):
    """Load ImageNet (or any) weights for the backbone body from a local file: the
    paper's transfer-learning recipe. Keys may carry torchvision's resnet names."""
    state = torch.load(path, map_location="cpu")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    body = model.backbone.body
    rename = {"conv1.": "stem.0.", "bn1.": "stem.1.", "layer1.": "stem.4."}
    mapped = {}
    for k, v in state.items():
        for a, b in rename.items():
            if k.startswith(a):
                k = b + k[len(a):]
        mapped[k] = v
    missing, unexpected = body.load_state_dict(mapped, strict=False)
    loaded = len(body.state_dict()) - len(missing)
    if loaded == 0:
        raise ValueError(f"{path}: none of its weights match the {model.arch} backbone")
    if freeze:
        for p in body.parameters():
            p.requires_grad_(False)
        body.eval()  # frozen BN statistics too
    return loaded, len(unexpected)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


class ExportWrapper(nn.Module):
    """What the ONNX file computes: normalised image -> per-anchor class probabilities and
    raw box regressions, levels concatenated (P3..P7), each level as its convolution writes it
    (anchor, class or coordinate, y, x: the 'planar' layout). torchvision's head transposes
    every level to (y, x, anchor, class), which cost 2-9 % of the fp32 forward pass (one-off timings);
    the TypeScript decoder reads either. Anchors, decoding, thresholds and NMS live there."""

    def __init__(self, model):
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head

    def forward(self, x):
        feats = list(self.backbone(x).values())
        cls, reg = self.head.classification_head, self.head.regression_head
        logits = torch.cat([cls.cls_logits(cls.conv(f)).flatten(1) for f in feats], 1)
        deltas = torch.cat([reg.bbox_reg(reg.conv(f)).flatten(1) for f in feats], 1)
        return torch.sigmoid(logits), deltas


def widen_state(new, old, path="checkpoint"):
    """Embed a narrower model's weights in a wider one of the same layout so that the wider
    model computes exactly what the narrow one did (function-preserving widening): old
    weights fill the leading slices; weights that read a new input channel are zero, so the
    new channels (randomly initialised, as built) start with no effect downstream and the
    first gradient steps switch them on. Identical shapes are copied as they are; only the
    backbone and the FPN's lateral convolutions (which read it) may differ."""
    extra = sorted(set(old) - set(new))
    if extra:
        raise ValueError(f"{path}: weights this architecture does not have ({', '.join(extra[:3])}...): "
                         "a different --arch or --head-norm?")
    out = {}
    for k, v in new.items():
        w = old.get(k)
        if w is None:
            raise ValueError(f"{path}: no weight '{k}' (a different architecture?)")
        if w.shape == v.shape:
            out[k] = w
            continue
        widenable = k.startswith("backbone.body.") or k.startswith("backbone.fpn.inner_blocks.")
        if not widenable or w.dim() != v.dim() or any(a > b for a, b in zip(w.shape, v.shape)):
            raise ValueError(f"{path}: '{k}' is {tuple(w.shape)}, which does not fit {tuple(v.shape)}")
        t = v.clone()
        if t.dim() >= 2:
            t[:, w.shape[1]:] = 0  # reads a new input channel
        t[tuple(slice(0, n) for n in w.shape)] = w
        out[k] = t
    return out


def load_init(model, path):
    """Start from a trained model: a training checkpoint (.pt) or a shipped ONNX file.
    The ONNX export folds each BatchNorm into its convolution, so the backbone's
    convolutions (in definition order, which is the graph's order) get the folded
    weights and their BatchNorms become identities. Returns True when BN was folded:
    training must then keep BatchNorm statistics frozen (eval mode)."""
    if not path.endswith(".onnx"):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(widen_state(model.state_dict(), ck["model"] if "model" in ck else ck, path))
        return bool(ck.get("frozen_bn", False)) if isinstance(ck, dict) else False
    import onnx
    from onnx import numpy_helper
    try:
        graph = onnx.load(path).graph
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise SystemExit(f"{path}: not an ONNX model ({type(e).__name__})") from e
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        raise SystemExit(f"{path}: an int8 (quantised) model cannot be trained on; --init the fp32 model "
                         "(models/hemocount-default.onnx) or a checkpoint")
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    state = model.state_dict()
    named = {k: v for k, v in inits.items() if k in state}
    anonymous = [v for k, v in inits.items() if k not in state]
    convs = [m for m in model.backbone.body.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.backbone.body.modules() if isinstance(m, nn.BatchNorm2d)]
    if any(named[k].shape != state[k].shape for k in named):
        raise ValueError(f"{path}: its weights do not fit the {model.arch} architecture (to widen a shipped "
                         "model, --init a training checkpoint .pt of it, or fine-tune it as it is first)")
    if len(anonymous) != 2 * len(convs) or len(bns) != len(convs):
        raise ValueError(f"{path}: its weights do not fit the {model.arch} architecture "
                         f"({len(anonymous)} folded tensors for {len(convs)} convolutions)")
    model.load_state_dict({**state, **named})
    with torch.no_grad():
        for conv, bn, (w, b) in zip(convs, bns, zip(anonymous[0::2], anonymous[1::2])):
            if conv.weight.shape != w.shape:
                raise ValueError(f"{path}: a {tuple(w.shape)} weight does not fit a {tuple(conv.weight.shape)} convolution")
            conv.weight.copy_(w)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    return True

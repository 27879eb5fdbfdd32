#!/usr/bin/python3
"""Static int8 QDQ quantisation of a hemocount RetinaNet ONNX model.

    /usr/bin/python3 scripts/quantize.py IN.onnx OUT.onnx --ranges RANGES.json
        [--calib p99.99|p99.999|p99.9|minmax] [--act uint8|int8] [--float-final both|cls|reg|none]
        [--float-first | --uint8-input] [--full-range]

RANGES.json comes from `node scripts/calibrate-ranges.mjs IN.onnx --out RANGES.json`.
Needs only the `onnx` and `numpy` packages (no onnxruntime).

What it writes (the QDQ format that onnxruntime's CPU EP fuses into QLinearConv / QLinearAdd
and an 8-bit Resize):
- every Conv weight: per-output-channel symmetric int8 (axis 0, zero point 0), through a
  DequantizeLinear of its own per Conv (the head's weights are shared by the five pyramid
  levels: one int8 initializer, one DQ per Conv). By default the weights use 7 bits,
  [-63, 63] ("reduce range"): onnxruntime's u8 x s8 kernels on x86 CPUs without VNNI
  (AVX2, AVX-512 without VNNI) add pairs of products in saturating int16 (vpmaddubsw), and
  with full-range weights that saturates (measured on an AVX2 EPYC: scores 0.04 off on
  average, F1 down by up to 4 points); with 7 bits it cannot. --full-range for VNNI/ARM;
- every Conv bias: int32 with scale = input scale x weight scale, zero point 0;
- per-tensor activations (uint8 by default) with scale / zero point from the calibrated
  range (clipped to the chosen |x| percentile, widened to hold 0): the graph input, every
  Conv input and output and every Add input and output, so each Conv / Add is
  DQ -> op -> Q. A Relu that is the only consumer of a Conv or Add output is folded into
  that output's QuantizeLinear (range [0, max], zero point at the type's minimum: the
  clamp is the Relu). A nearest Resize gets its input's scale on its output;
- --float-final: the last Conv of the classification head (feeding the Sigmoid; `cls`)
  and/or of the regression head (`reg`) keep float weights and a float output (default
  both: 8-bit logits cost F1); their input is still the dequantised 8-bit activation. The
  graph outputs (scores, deltas) stay float either way. --float-first keeps the Conv on the
  graph input float too (float image in, 8-bit out).
- --uint8-input: the graph input becomes the 8-bit RGB image itself, NHWC, and the
  normalisation ((x * scale - mean) / std) is folded into the first Conv's weights and bias,
  so that Conv is int8 with an exact input (no quantisation step of the image), and the
  float first Conv, its layout reorder and the caller's float tensor all go (onnxruntime
  removes the NHWC -> NCHW Transpose: its int8 Convs run NHWC). The padding of that Conv
  (top row and left column only: a stride-2 3x3 Conv on an even size never reaches past the
  bottom and right edges) is a grey of INPUT_ZERO_POINT where the float model saw the mean
  colour (123.7, 116.3, 103.5): within 0.2 of a normalised unit. The metadata's input
  becomes layout NHWC, dtype uint8 (src/core/pipeline.ts pads with the mean colour), and its
  format hemocount-retinanet/3, which builds that feed only float NCHW refuse by name.
- --act int8 writes int8 activations; onnxruntime's x86 CPU EP does not fuse int8-activation
  Convs (session.qdqisint8allowed is off there), so that model is slower than fp32.
Everything else of the model is copied unchanged, metadata included, except that the
model's name gets an "-int8" suffix (so counts and reports say which of the two ran).
"""
import argparse
import json
import sys
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper


def act_params(r, calib, act):
    """(scale, zero_point) for one activation tensor's calibrated range."""
    lo, hi = r["min"], r["max"]
    if calib != "minmax":
        p = r["abs_percentiles"][calib]
        lo, hi = max(lo, -p), min(hi, p)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = np.float32((hi - lo) / 255.0)
    qmin, qmax = (0, 255) if act == "uint8" else (-128, 127)
    zp = int(np.clip(round(qmin - lo / float(scale)), qmin, qmax))
    return scale, zp


def topo_sort(nodes, graph_inputs, initializers):
    avail = set(graph_inputs) | set(initializers) | {""}
    pending, out = list(nodes), []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                out.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"graph is not a DAG after rewriting (stuck at {rest[0].name})")
        pending = rest
    return out


def per_channel_int8(w, w_qmax):
    """Symmetric per-output-channel weights: (int8 values in [-w_qmax, w_qmax], float32 scales)."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    ws = (np.where(amax > 0, amax, 1.0) / w_qmax).astype(np.float32)
    wq = np.clip(np.round(w / ws.reshape(-1, *[1] * (w.ndim - 1))), -w_qmax, w_qmax).astype(np.int8)
    return wq, ws


INPUT_ZERO_POINT = 115  # about the mean of the mean colour's channels (123.7, 116.3, 103.5)


def fold_uint8_input(model, w_qmax):
    """Make the graph input the uint8 NHWC image; see --uint8-input above."""
    g = model.graph
    prop = next(p for p in model.metadata_props if p.key == "hemocount")
    meta = json.loads(prop.value)
    inp = meta["input"]
    inits = {t.name: t for t in g.initializer}
    name = g.input[0].name
    firsts = [n for n in g.node if name in n.input]
    if len(firsts) != 1 or firsts[0].op_type != "Conv" or firsts[0].input[0] != name or firsts[0].input[1] not in inits:
        sys.exit("--uint8-input: the graph input must feed exactly one float Conv (quantise with the first Conv float)")
    conv = firsts[0]
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(len(w))
    mean, std, scale, z = np.array(inp["mean"], np.float64), np.array(inp["std"], np.float64), float(inp["scale"]), INPUT_ZERO_POINT
    # conv(w, (x * scale - mean) / std) + b = conv(wf, x - z) + b + sum(wf * (z - mean / scale)) inside the image
    wf = w * (scale / std)[None, :, None, None]
    bf = b + (wf * (z - mean / scale)[None, :, None, None]).sum(axis=(1, 2, 3))
    wq, ws = per_channel_int8(wf, w_qmax)
    bq = np.round(bf / ws.astype(np.float64))
    if np.abs(bq).max() >= 2**31 - 1:
        sys.exit("--uint8-input: the first Conv's bias does not fit int32")
    p = "image_uint8/"
    g.initializer.extend([
        numpy_helper.from_array(np.array(1.0, np.float32), p + "scale"),
        numpy_helper.from_array(np.array(z, np.uint8), p + "zero_point"),
        numpy_helper.from_array(wq, p + "weight_q"),
        numpy_helper.from_array(ws, p + "weight_scale"),
        numpy_helper.from_array(np.zeros(len(ws), np.int8), p + "weight_zero_point"),
        numpy_helper.from_array(bq.astype(np.int32), p + "bias_q"),
        numpy_helper.from_array(ws, p + "bias_scale"),
        numpy_helper.from_array(np.zeros(len(ws), np.int32), p + "bias_zero_point"),
    ])
    pre = [
        helper.make_node("Transpose", [name], [p + "nchw"], perm=[0, 3, 1, 2], name=p + "Transpose"),
        helper.make_node("DequantizeLinear", [p + "nchw", p + "scale", p + "zero_point"], [p + "x"], name=p + "x/DequantizeLinear"),
        helper.make_node("DequantizeLinear", [p + "weight_q", p + "weight_scale", p + "weight_zero_point"], [p + "w"],
                         name=p + "w/DequantizeLinear", axis=0),
        helper.make_node("DequantizeLinear", [p + "bias_q", p + "bias_scale", p + "bias_zero_point"], [p + "b"],
                         name=p + "b/DequantizeLinear", axis=0),
    ]
    conv.input[:] = [p + "x", p + "w", p + "b"]
    nodes = pre + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    t = g.input[0].type.tensor_type
    t.elem_type = onnx.TensorProto.UINT8
    old = [d.dim_param or d.dim_value for d in t.shape.dim]  # [1, 3, height, width]
    del t.shape.dim[:]
    for v in (old[0], old[2], old[3], 3):
        d = t.shape.dim.add()
        if isinstance(v, str):
            d.dim_param = v
        else:
            d.dim_value = v
    inp.update(layout="NHWC", dtype="uint8", normalisation="folded into the first convolution")
    meta["format"] = "hemocount-retinanet/3"  # 3: the input may be the 8-bit image; older builds refuse it
    prop.value = json.dumps(meta)


def name_int8(model):
    """The hemocount metadata's name, suffixed "-int8" (once)."""
    for p in model.metadata_props:
        if p.key == "hemocount":
            meta = json.loads(p.value)
            if not meta["name"].endswith("-int8"):
                meta["name"] += "-int8"
            p.value = json.dumps(meta)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--ranges", required=True, help="JSON from scripts/calibrate-ranges.mjs")
    ap.add_argument("--calib", default="p99.99", help="minmax, or p<P> for the P %% percentile of |x| (default p99.99)")
    ap.add_argument("--act", choices=["uint8", "int8"], default="uint8", help="activation type (default uint8)")
    ap.add_argument("--float-final", choices=["both", "cls", "reg", "none"], default="both",
                    help="keep the heads' last Convs float (default both)")
    ap.add_argument("--float-first", action="store_true",
                    help="keep the Conv(s) reading the graph input float (float input and weights, 8-bit output)")
    ap.add_argument("--uint8-input", action="store_true",
                    help="the graph input is the uint8 NHWC image, normalised inside the first (int8) Conv; see above")
    ap.add_argument("--full-range", action="store_true",
                    help="8-bit weights ([-127, 127]); only for CPUs with VNNI (AVX512-VNNI / AVX-VNNI) or ARM, see above")
    a = ap.parse_args(argv)

    a.float_first |= a.uint8_input  # quantised first as float, then folded
    model = onnx.load(a.input)
    ranges = json.load(open(a.ranges))["tensors"]
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    graph_outputs = {o.name for o in g.output}
    nodes = list(g.node)
    w_qmax = 127 if a.full_range else 63
    act_np = np.uint8 if a.act == "uint8" else np.int8

    def consumers_of(nodes):
        c = defaultdict(list)
        for n in nodes:
            for i in n.input:
                c[i].append(n)
        return c

    # 1. the heads' last Convs: output reaches a graph output through shape ops only
    cons = consumers_of(nodes)

    def head_kind(t):
        seen_sigmoid = False
        while t not in graph_outputs:
            nxt = [n for n in cons[t] if n.op_type != "Shape"]
            if len(nxt) != 1 or nxt[0].op_type not in ("Reshape", "Transpose", "Concat", "Sigmoid", "Flatten"):
                return None
            seen_sigmoid |= nxt[0].op_type == "Sigmoid"
            t = nxt[0].output[0]
        return "cls" if seen_sigmoid else "reg"

    final_kind = {}
    for n in nodes:
        if n.op_type == "Conv":
            k = head_kind(n.output[0])
            if k:
                final_kind[n.name] = k
    float_final = {n for n, k in final_kind.items() if a.float_final in ("both", k)}
    float_first = {n.name for n in nodes if n.op_type == "Conv" and n.input[0] in graph_inputs} if a.float_first else set()

    # 2. fold Relus that are the only consumer of a Conv / Add output
    producer = {o: n for n in nodes for o in n.output}
    folded = []
    for n in list(nodes):
        if n.op_type != "Relu":
            continue
        x = n.input[0]
        p = producer.get(x)
        if p is None or p.op_type not in ("Conv", "Add") or p.name in float_final:
            continue
        if len(cons[x]) != 1 or x in graph_outputs:
            continue
        p.output[0] = n.output[0]
        nodes.remove(n)
        folded.append(n.name)
    cons = consumers_of(nodes)
    producer = {o: n for n in nodes for o in n.output}

    # 3. which tensors are quantised, with which parameters
    params = {}

    def need(t):
        if t in params:
            return
        if t not in ranges:
            sys.exit(f"no calibrated range for tensor {t!r} (ranges from another model?)")
        params[t] = act_params(ranges[t], a.calib, a.act)

    for n in nodes:  # topological order: a Resize's input is set before its output
        if n.op_type == "Conv":
            if n.name not in float_first:
                need(n.input[0])
            if n.name not in float_final:
                need(n.output[0])
        elif n.op_type == "Add":
            for i in n.input:
                need(i)
            need(n.output[0])
        elif n.op_type == "Resize" and n.input[0] in params:
            params[n.output[0]] = params[n.input[0]]
        elif n.op_type == "Relu" and n.input[0] in params:
            need(n.output[0])
    qdq_ops = {"Conv", "Add", "Resize", "Relu"}

    new_inits = []

    def add_init(name, arr):
        new_inits.append(numpy_helper.from_array(arr, name))
        return name

    # 4. Q after each quantised tensor's producer, a DQ of its own for every fusable consumer,
    # one shared DQ (under the tensor's old name) for the rest (Shape, Reshape, ...)
    extra_nodes = []
    conv_in = {n.name: n.input[0] for n in nodes if n.op_type == "Conv"}
    for t, (scale, zp) in params.items():
        s_name = add_init(f"{t}/scale", np.array(scale, np.float32))
        z_name = add_init(f"{t}/zero_point", np.array(zp, act_np))
        src = t
        if t not in graph_inputs:
            src = f"{t}/float"
            producer[t].output[0] = src
        extra_nodes.append(helper.make_node("QuantizeLinear", [src, s_name, z_name], [f"{t}/q"], name=f"{t}/QuantizeLinear"))
        shared = False
        for k, c in enumerate(cons[t]):
            for j, i in enumerate(c.input):
                if i != t:
                    continue
                if c.op_type == "Shape":  # the 8-bit tensor has the same shape: no DQ to compute
                    c.input[j] = f"{t}/q"
                elif c.op_type == "Add" or (c.op_type in qdq_ops and j == 0):
                    dq = f"{t}/dq{k}_{j}"
                    extra_nodes.append(helper.make_node("DequantizeLinear", [f"{t}/q", s_name, z_name], [dq], name=f"{dq}/DequantizeLinear"))
                    c.input[j] = dq
                elif t not in graph_inputs:
                    shared = True
        if (shared or t in graph_outputs) and t not in graph_inputs:
            extra_nodes.append(helper.make_node("DequantizeLinear", [f"{t}/q", s_name, z_name], [t], name=f"{t}/DequantizeLinear"))

    # 5. weights (per channel, symmetric) and int32 biases
    w_done = {}
    for n in nodes:
        if n.op_type != "Conv" or n.name in float_final or n.name in float_first:
            continue
        w_name = n.input[1]
        if w_name not in inits:
            sys.exit(f"{n.name}: weight {w_name} is not an initializer")
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        if w_name not in w_done:
            wq, ws = per_channel_int8(w, w_qmax)
            add_init(f"{w_name}/q", wq)
            add_init(f"{w_name}/scale", ws)
            add_init(f"{w_name}/zero_point", np.zeros(w.shape[0], np.int8))
            w_done[w_name] = ws
        ws = w_done[w_name]
        wdq = f"{n.name}/weight_dq"
        extra_nodes.append(helper.make_node("DequantizeLinear", [f"{w_name}/q", f"{w_name}/scale", f"{w_name}/zero_point"], [wdq],
                                            name=f"{wdq}/DequantizeLinear", axis=0))
        n.input[1] = wdq
        if len(n.input) > 2 and n.input[2]:
            b_name = n.input[2]
            b = numpy_helper.to_array(inits[b_name]).astype(np.float64)
            x_scale = np.float64(params[conv_in[n.name]][0])
            bs = (x_scale * ws.astype(np.float64)).astype(np.float32)
            bq = np.round(b / bs.astype(np.float64))
            if np.abs(bq).max() >= 2**31 - 1:
                sys.exit(f"{n.name}: bias does not fit int32")
            add_init(f"{n.name}/bias_q", bq.astype(np.int32))
            add_init(f"{n.name}/bias_scale", bs)
            add_init(f"{n.name}/bias_zero_point", np.zeros(len(bs), np.int32))
            bdq = f"{n.name}/bias_dq"
            extra_nodes.append(helper.make_node("DequantizeLinear", [f"{n.name}/bias_q", f"{n.name}/bias_scale", f"{n.name}/bias_zero_point"],
                                                [bdq], name=f"{bdq}/DequantizeLinear", axis=0))
            n.input[2] = bdq

    all_nodes = nodes + extra_nodes
    used = {i for n in all_nodes for i in n.input}
    kept_inits = [t for t in g.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    sorted_nodes = topo_sort(all_nodes, graph_inputs, [t.name for t in kept_inits])
    del g.node[:]
    g.node.extend(sorted_nodes)
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    # graph inputs that were initializers (old exporters) must go with them
    keep_in = [i for i in g.input if i.name not in inits or i.name in used]
    del g.input[:]
    g.input.extend(keep_in)
    del g.value_info[:]

    if a.uint8_input:
        fold_uint8_input(model, w_qmax)
    name_int8(model)
    onnx.checker.check_model(model)
    onnx.save(model, a.output)
    n_conv = sum(1 for n in nodes if n.op_type == "Conv")
    n_first = 0 if a.uint8_input else len(float_first)
    print(f"{a.output}: {n_conv - len(float_final) - n_first}/{n_conv} Convs int8 (float: {len(float_final)} final "
          f"({a.float_final}), {n_first} first{', uint8 image input' if a.uint8_input else ''}), "
          f"{len(params)} activations {a.act} ({a.calib}), {len(folded)} Relus folded, weights [-{w_qmax}, {w_qmax}]", file=sys.stderr)


if __name__ == "__main__":
    main()

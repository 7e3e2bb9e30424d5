"""QDQ test models built by hand with onnx.helper, as QDQ.md describes, plus a pure
numpy/spec evaluation of them (what every FPGA path must equal).

``quantize(model, calibration)`` takes a chain model (Conv / Gemm / Relu / MaxPool / Flatten /
LogSoftmax, as the zoo's lenet and digits) and returns its int8 QDQ form: symmetric per-channel
weights, per-tensor activation scales from the calibration min/max, int32 biases at
s_x * s_w. It is a test fixture, not the quantization pass.
"""

from __future__ import annotations

import numpy as np
import onnx
from hal.backends.fpga import spec
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def _ranges(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for out in node.output:
            if out not in known:
                m.graph.output.append(helper.make_empty_tensor_value_info(out))
    names = [o.name for o in m.graph.output]
    outs = ReferenceEvaluator(m).run(None, {m.graph.input[0].name: x})
    amax = {m.graph.input[0].name: float(np.abs(x).max())}
    amax.update({n: float(np.abs(v).max()) for n, v in zip(names, outs)})
    return amax


def quantize(model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    amax = _ranges(model, calibration)
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes, new_inits = [], []
    consumers: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def const(name, arr):
        new_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def scale_of(t):
        return np.float32(max(amax[t], 1e-8) / 127.0)

    def q_dq(t, s, tag):
        sn, zn = const(f"{tag}.scale", np.float32(s)), const(f"{tag}.zp", np.int8(0))
        nodes.append(helper.make_node("QuantizeLinear", [t, sn, zn], [f"{tag}.q"], name=f"{tag}.Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}.q", sn, zn], [f"{tag}.dq"],
                                      name=f"{tag}.DQ"))
        return f"{tag}.dq"

    x = g.input[0].name
    dq = {x: (q_dq(x, scale_of(x), "input"), scale_of(x))}  # float tensor -> (its DQ, scale)
    skip = set()
    for node in g.node:
        if node.name in skip:
            continue
        if node.op_type in ("Conv", "Gemm"):
            xin, s_x = dq[node.input[0]]
            w = inits[node.input[1]]
            axis = 0
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
                axis = 1
            red = tuple(i for i in range(w.ndim) if i != axis)
            s_w = (np.abs(w).max(axis=red) / 127.0).astype(np.float32)
            s_w = np.maximum(s_w, np.float32(1e-8))
            shp = [1] * w.ndim
            shp[axis] = -1
            w_q = np.clip(np.rint(w / s_w.reshape(shp)), -127, 127).astype(np.int8)
            tag = node.name
            wn = const(f"{tag}.w_q", w_q)
            ws, wz = const(f"{tag}.w_scale", s_w), const(f"{tag}.w_zp", np.zeros(len(s_w), np.int8))
            nodes.append(helper.make_node("DequantizeLinear", [wn, ws, wz], [f"{tag}.w"],
                                          name=f"{tag}.DQw", axis=axis))
            ins = [xin, f"{tag}.w"]
            if len(node.input) > 2 and node.input[2]:
                s_b = (s_x * s_w).astype(np.float32)
                b_q = np.rint(inits[node.input[2]] / s_b).astype(np.int32)
                bn = const(f"{tag}.b_q", b_q)
                bs, bz = const(f"{tag}.b_scale", s_b), const(f"{tag}.b_zp",
                                                            np.zeros(len(s_b), np.int32))
                nodes.append(helper.make_node("DequantizeLinear", [bn, bs, bz], [f"{tag}.b"],
                                              name=f"{tag}.DQb", axis=0))
                ins.append(f"{tag}.b")
            nodes.append(helper.make_node(node.op_type, ins, list(node.output), name=node.name,
                                          **{a.name: helper.get_attribute_value(a)
                                             for a in node.attribute}))
            out = node.output[0]
            nxt = consumers.get(out, [])
            if len(nxt) == 1 and nxt[0].op_type in ("Relu", "Clip"):
                for bound in nxt[0].input[1:]:
                    if bound:
                        const(bound, inits[bound])
                nodes.append(nxt[0])
                skip.add(nxt[0].name)
                out = nxt[0].output[0]
            dq[out] = (q_dq(out, scale_of(out), out), scale_of(out))
        elif node.op_type in ("MaxPool", "Flatten", "Relu") and node.input[0] in dq:
            xin, s = dq[node.input[0]]
            nodes.append(helper.make_node(node.op_type, [xin], list(node.output), name=node.name,
                                          **{a.name: helper.get_attribute_value(a)
                                             for a in node.attribute}))
            dq[node.output[0]] = (q_dq(node.output[0], s, node.output[0]), s)
        else:
            ins = [dq[i][0] if i in dq else i for i in node.input]
            nodes.append(helper.make_node(node.op_type, ins, list(node.output), name=node.name,
                                          **{a.name: helper.get_attribute_value(a)
                                             for a in node.attribute}))
    outs = []
    for o in g.output:
        if o.name in dq:  # the graph's result is the dequantized int8 tensor
            nodes.append(helper.make_node("Identity", [dq[o.name][0]], [o.name + ".int8dq"]))
            outs.append(helper.make_tensor_value_info(o.name + ".int8dq", TensorProto.FLOAT, None))
        else:
            outs.append(o)
    graph = helper.make_graph(nodes, g.name + "_qdq", list(g.input), outs, new_inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                             ir_version=model.ir_version)


def evaluate(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """The QDQ model evaluated with the FPGA specification for its accelerator layers and
    plain numpy for the rest (QuantizeLinear: round half to even, saturate)."""
    import onnx_ir as ir
    from hal.backends.fpga import qdq

    irm = ir.from_proto(model)
    from onnx_ir.passes.common import ShapeInferencePass

    irm = ShapeInferencePass()(irm).model
    layers = {id(layer.nodes[0]): layer for layer in qdq.analyse(irm.graph).layers}
    owned = {id(n) for layer in layers.values() for n in layer.nodes}
    env = {irm.graph.inputs[0].name: x}
    for v in irm.graph.initializers.values():
        env[v.name] = v.const_value.numpy()
    for node in irm.graph:
        if id(node) in layers:
            L = layers[id(node)]
            if L.op == "conv":
                env[L.y] = spec.conv2d(env[L.x], L.w, L.bias, L.m, L.s, L.stride, L.pad,
                                       L.groups, L.act_min, L.act_max, L.pool)
            else:
                env[L.y] = spec.gemm(env[L.x], L.w, L.bias, L.m, L.s, L.act_min, L.act_max)
            continue
        if id(node) in owned:
            continue
        ins = [env[v.name] if v is not None else None for v in node.inputs]
        a = {k: v.value for k, v in node.attributes.items()}
        if node.op_type == "QuantizeLinear":
            out = np.clip(np.rint(ins[0] / ins[1]), -128, 127).astype(np.int8)
        elif node.op_type == "DequantizeLinear":
            scale = ins[1]
            if scale.size > 1:
                shape = [1] * ins[0].ndim
                shape[a.get("axis", 1)] = -1
                scale = scale.reshape(shape)
            out = ins[0].astype(np.float32) * scale
        elif node.op_type == "Gemm":
            w = ins[1].T if a.get("transB") else ins[1]
            out = ins[0] @ w + (ins[2] if len(ins) > 2 and ins[2] is not None else 0)
        elif node.op_type == "Flatten":
            out = ins[0].reshape(ins[0].shape[0], -1)
        elif node.op_type == "Identity":
            out = ins[0]
        elif node.op_type == "LogSoftmax":
            z = ins[0] - ins[0].max(axis=a.get("axis", -1), keepdims=True)
            out = z - np.log(np.exp(z).sum(axis=a.get("axis", -1), keepdims=True))
        else:
            raise NotImplementedError(node.op_type)
        env[node.outputs[0].name] = out
    return [env[v.name] for v in irm.graph.outputs]


def with_int8_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same QDQ model taking the quantized input and giving the quantized output (int8):
    the input's QuantizeLinear and the output's DequantizeLinear are cut off, so every node
    left is an accelerator node."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    x = g.input[0]
    q_in = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == x.name)
    dims = [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim]
    out_id = next(n for n in g.node if n.output[0] == g.output[0].name)
    dq_out = next(n for n in g.node if n.output[0] == out_id.input[0])
    for n in (q_in, out_id, dq_out):
        g.node.remove(n)
    g.ClearField("input")
    g.input.append(helper.make_tensor_value_info(q_in.output[0], TensorProto.INT8, dims))
    g.ClearField("output")
    g.output.append(helper.make_tensor_value_info(dq_out.input[0], TensorProto.INT8, None))
    return m


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """A float conv chain every node of whose QDQ form the accelerator runs: conv 3x3 + ReLU +
    2x2 max-pool, conv 3x3 stride 2 + ReLU6 (Clip), depthwise conv."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
             for n, s in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (16, 8, 3, 3)),
                          ("b2", (16,)), ("w3", (16, 1, 3, 3)), ("b3", (16,)))]
    inits += [numpy_helper.from_array(np.float32(0), "zero"),
              numpy_helper.from_array(np.float32(6), "six")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4,
                              strides=[2, 2]),
             helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], name="dw", pads=[1] * 4,
                              group=16)]
    g = helper.make_graph(nodes, "convnet",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)

"""Convert the NanoDet TensorFlow.js graph to ONNX with numpy and ``onnx`` only.

Why not ``tf2onnx --tfjs``: it needs TensorFlow (a ~600 MB install on the installer's machine and
in CI, minutes on a fresh one), and its output is not byte-reproducible (it numbers the names it
makes in an order that changes from run to run), so the converted file could not be pinned by
its SHA-256. This graph uses 16 TensorFlow ops; each maps onto one ONNX op, and the result's
outputs match tf2onnx's within 1e-4 on real frames (measured when this converter was written).
Anything outside that op set fails loudly, naming the op: a newer graph must be looked at, not
guessed.

The graph is an onnx-tf export: each NHWC-only op (Conv2D, MaxPool, ResizeBilinear) sits
between Transposes, so each is emitted NCHW-native with a Transpose pair around it, and a
cleanup pass cancels pairs that compose to the identity. ResizeBilinear's fixed target size
(traced at 416x416) becomes a scale, so the graph runs at any input size that is a multiple of
32. Constant-only subgraphs (the Reshape targets) are evaluated here. Runs on the installer's
machine at fetch time; the device only gets the ONNX file.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.errors import ModelError

_DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.float32,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
}
_NHWC_TO_NCHW = [0, 3, 1, 2]
_NCHW_TO_NHWC = [0, 2, 3, 1]
_HINT = "the model package is not the NanoDet graph anoncam knows; check the manifest's version"


def _fail(message: str) -> ModelError:
    return ModelError(f"converting the person model: {message}", hint=_HINT)


def read_weights(model: dict[str, Any], shards: dict[str, bytes]) -> dict[str, NDArray[Any]]:
    """The named weight arrays of a tfjs graph, from its weight shards (file name -> bytes)."""
    out: dict[str, NDArray[Any]] = {}
    for group in model["weightsManifest"]:
        try:
            data = b"".join(shards[p] for p in group["paths"])
        except KeyError as exc:
            raise _fail(f"weight shard {exc} missing") from None
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            arr: NDArray[Any]
            if q:
                if q.get("dtype") != "float16":
                    raise _fail(f"unsupported weight quantization {q} for {w['name']}")
                arr = np.frombuffer(data, np.float16, n, off).astype(np.float32)
                off += 2 * n
            else:
                dt = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}[w["dtype"]]
                arr = np.frombuffer(data, dt, n, off).copy()
                off += arr.itemsize * n
            out[w["name"]] = arr.reshape(shape)
        if off != len(data):
            raise _fail(f"weights: read {off} of {len(data)} bytes")
    return out


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        return [int(i) for i in lst.get("i", [])] or [float(f) for f in lst.get("f", [])]
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    for kind, cast in (("b", bool), ("i", int), ("f", float)):
        if kind in a:
            return cast(a[kind])
    return a.get("type", a)


def _resize_scales(
    nodes: list[dict[str, Any]], weights: dict[str, NDArray[Any]]
) -> dict[str, tuple[float, float]]:
    """ResizeBilinear target size / traced input size, from static NHWC shapes at the traced
    input size (only the ops of this graph are modelled)."""
    shp: dict[str, list[int]] = {}
    vals: dict[str, NDArray[Any]] = {}
    scales: dict[str, tuple[float, float]] = {}
    for n in nodes:
        op, name = n["op"], n["name"]
        ins = [i.split(":")[0] for i in n.get("input", [])]
        if op == "Const":
            vals[name] = weights[name]
            shp[name] = list(weights[name].shape)
        elif op == "Placeholder":
            shp[name] = [int(d["size"]) for d in n["attr"]["shape"]["shape"]["dim"]]
        elif op == "Transpose":
            shp[name] = [shp[ins[0]][p] for p in vals[ins[1]].tolist()]
        elif op in ("Pad", "PadV2"):
            pads = vals[ins[1]]
            shp[name] = [d + int(a) + int(b) for d, (a, b) in zip(shp[ins[0]], pads, strict=True)]
        elif op in ("Conv2D", "MaxPool"):
            x = shp[ins[0]]
            s = [int(i) for i in n["attr"]["strides"]["list"]["i"]]
            if op == "Conv2D":
                kh, kw, _, co = shp[ins[1]]
            else:
                _, kh, kw, _ = [int(i) for i in n["attr"]["ksize"]["list"]["i"]]
                co = x[3]
            shp[name] = [x[0], (x[1] - kh) // s[1] + 1, (x[2] - kw) // s[2] + 1, co]
        elif op == "ResizeBilinear":
            x = shp[ins[0]]
            size = vals[ins[1]].astype(float)
            scales[name] = (float(size[0] / x[1]), float(size[1] / x[2]))
            shp[name] = [x[0], int(size[0]), int(size[1]), x[3]]
        elif op == "ConcatV2":
            axis = int(vals[ins[-1]])
            parts = [shp[i] for i in ins[:-1]]
            joined = list(parts[0])
            joined[axis] = sum(p[axis] for p in parts)
            shp[name] = joined
        elif ins and ins[0] in shp:  # elementwise and shape-keeping ops
            shp[name] = shp[ins[0]]
    return scales


def convert(graph_json: bytes, shards: dict[str, bytes]) -> bytes:
    """The tfjs ``model.json`` and its weight shards -> serialized ONNX (opset 13, input
    ``N x 3 x H x W``, the signature's output names), deterministic bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = json.loads(graph_json)
    weights = read_weights(model, shards)
    tf_nodes: list[dict[str, Any]] = model["modelTopology"]["node"]
    scales = _resize_scales(tf_nodes, weights)
    sig_out = list(model["signature"]["outputs"])
    const: dict[str, NDArray[Any]] = {}
    nodes: list[Any] = []
    inits: dict[str, NDArray[Any]] = {}
    inputs: list[Any] = []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__{counter[0]}"

    def ref(name: str) -> str:
        name = name.lstrip("^")
        return name if ":" in name else name + ":0"

    def init(arr: NDArray[Any], base: str) -> str:
        n = fresh(base)
        inits[n] = arr
        return n

    def use(t: str) -> str:  # a folded constant used by a real node becomes an initializer
        if t in const and t not in inits:
            inits[t] = const[t]
        return t

    def nchw(op: str, args: list[str], name: str, **attrs: Any) -> None:
        """Emit ``op`` in NCHW between the transposes the NHWC graph expects around it; the
        first of ``args`` is the NHWC tensor, the rest are passed through."""
        t = fresh(name + "/T")
        nodes.append(helper.make_node("Transpose", [args[0]], [t], perm=_NHWC_TO_NCHW, name=t))
        y = fresh(name + "/nchw")
        nodes.append(helper.make_node(op, [t, *args[1:]], [y], name=y, **attrs))
        nodes.append(
            helper.make_node("Transpose", [y], [name + ":0"], perm=_NCHW_TO_NHWC, name=name)
        )

    consumers: dict[str, int] = {}
    for n in tf_nodes:
        for i in n.get("input", []):
            consumers[ref(i)] = consumers.get(ref(i), 0) + 1
    by_name = {n["name"]: n for n in tf_nodes}
    # A Conv2D whose only consumer is Add(conv, 1-D const) takes the Add as its bias.
    bias_of: dict[str, str] = {}
    fused_add: dict[str, str] = {}
    for n in tf_nodes:
        if n["op"] in ("Add", "AddV2") and len(n["input"]) == 2:
            a, b = n["input"]
            if (
                by_name.get(a, {}).get("op") == "Conv2D"
                and consumers.get(ref(a)) == 1
                and by_name.get(b, {}).get("op") == "Const"
                and len(weights[b].shape) == 1
            ):
                bias_of[a] = b
                fused_add[n["name"]] = a

    for n in tf_nodes:
        op, name = n["op"], n["name"]
        ins = [ref(i) for i in n.get("input", []) if not i.startswith("^")]
        out = name + ":0"
        if op == "Const":
            const[out] = weights[name].astype(_DTYPES[_attr(n, "dtype")])
        elif op == "Placeholder":
            inputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 3, "H", "W"]))
        elif all(i in const for i in ins) and op in ("SparseToDense", "AddV2", "Add", "Identity"):
            v = [const[i] for i in ins]
            if op == "SparseToDense":
                idx, shape, values, default = v
                dense = np.full(shape.astype(np.int64), default, dtype=values.dtype)
                if idx.size:
                    dense[tuple(np.atleast_2d(idx).T)] = values
                const[out] = dense
            elif op in ("AddV2", "Add"):
                const[out] = (v[0] + v[1]).astype(v[0].dtype)
            else:
                const[out] = v[0]
        elif op == "Identity":
            nodes.append(helper.make_node("Identity", [use(ins[0])], [out], name=name))
        elif op in ("Add", "AddV2"):
            if name in fused_add:  # the conv already carries the bias: alias its output
                nodes.append(
                    helper.make_node("Identity", [fused_add[name] + ":0"], [out], name=name)
                )
            else:
                nodes.append(helper.make_node("Add", [use(i) for i in ins], [out], name=name))
        elif op == "LeakyRelu":
            alpha = _attr(n, "alpha", 0.2)
            nodes.append(helper.make_node("LeakyRelu", ins, [out], alpha=alpha, name=name))
        elif op == "Sigmoid":
            nodes.append(helper.make_node("Sigmoid", ins, [out], name=name))
        elif op == "Transpose":
            perm = const[ins[1]].astype(int).tolist()
            nodes.append(helper.make_node("Transpose", [ins[0]], [out], perm=perm, name=name))
        elif op in ("Pad", "PadV2"):
            p = const[ins[1]].astype(np.int64)  # [rank, 2]
            pads = init(np.concatenate([p[:, 0], p[:, 1]]), name + "/pads")
            extra = []
            if op == "PadV2":
                value = np.asarray(const[ins[2]], np.float32).reshape(())
                extra = [init(value, name + "/value")]
            nodes.append(
                helper.make_node("Pad", [ins[0], pads, *extra], [out], mode="constant", name=name)
            )
        elif op == "Conv2D":
            if _attr(n, "data_format", "NHWC") != "NHWC" or _attr(n, "padding") != "VALID":
                raise _fail(f"{name}: only NHWC VALID Conv2D is supported")
            w = const[ins[1]].transpose(3, 2, 0, 1)  # HWIO -> OIHW
            s, d = _attr(n, "strides"), _attr(n, "dilations", [1, 1, 1, 1])
            conv_in = [ins[0], init(w, name + "/W")]
            if name in bias_of:
                conv_in.append(init(const[bias_of[name] + ":0"].astype(np.float32), name + "/B"))
            nchw(
                "Conv",
                conv_in,
                name,
                strides=s[1:3],
                dilations=d[1:3],
                kernel_shape=list(w.shape[2:]),
            )
        elif op == "MaxPool":
            if _attr(n, "data_format", "NHWC") != "NHWC" or _attr(n, "padding") != "VALID":
                raise _fail(f"{name}: only NHWC VALID MaxPool is supported")
            k, s = _attr(n, "ksize"), _attr(n, "strides")
            nchw("MaxPool", [ins[0]], name, kernel_shape=k[1:3], strides=s[1:3])
        elif op == "ResizeBilinear":
            if name not in scales:
                raise _fail(f"{name}: unknown traced input size")
            sy, sx = scales[name]
            mode = (
                "half_pixel"
                if _attr(n, "half_pixel_centers")
                else ("align_corners" if _attr(n, "align_corners") else "asymmetric")
            )
            factors = init(np.array([1, 1, sy, sx], np.float32), name + "/scales")
            nchw(
                "Resize",
                [ins[0], "", factors],
                name,
                mode="linear",
                coordinate_transformation_mode=mode,
            )
        elif op == "ConcatV2":
            axis = int(const[ins[-1]])
            nodes.append(helper.make_node("Concat", ins[:-1], [out], axis=axis, name=name))
        elif op == "SplitV":
            sizes, axis = const[ins[1]].astype(np.int64), int(const[ins[2]])
            outs = [out] + [f"{name}:{i}" for i in range(1, _attr(n, "num_split"))]
            split = init(sizes, name + "/split")
            nodes.append(helper.make_node("Split", [ins[0], split], outs, axis=axis, name=name))
        elif op == "Reshape":
            target = init(const[ins[1]].astype(np.int64), name + "/shape")
            nodes.append(helper.make_node("Reshape", [ins[0], target], [out], name=name))
        else:
            raise _fail(f"unsupported op {op} ({name})")

    outputs = [
        helper.make_tensor_value_info(
            o, TensorProto.FLOAT, ["N", o.split(":")[0] + "_cells", o.split(":")[0] + "_ch"]
        )
        for o in sig_out
    ]
    graph = helper.make_graph(
        nodes, "nanodet", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="anoncam-tfjs",
        producer_version="1",
    )
    m.ir_version = 7
    _drop_identities(m)
    _cancel_transposes(m)
    _drop_identities(m)
    onnx.checker.check_model(m, full_check=True)
    data: bytes = m.SerializeToString(deterministic=True)
    return data


def _rewire(graph: Any, old: str, new: str) -> None:
    for q in graph.node:
        for k, i in enumerate(q.input):
            if i == old:
                q.input[k] = new


def _drop_identities(m: Any) -> None:
    g = m.graph
    outputs = {o.name for o in g.output}
    for n in list(g.node):
        if n.op_type == "Identity" and n.output[0] not in outputs:
            _rewire(g, n.output[0], n.input[0])
            g.node.remove(n)


def _cancel_transposes(m: Any) -> None:
    """Remove Transpose -> Transpose chains that compose to the identity and merge the others,
    to a fixpoint (a first Transpose with other consumers is kept until none is left)."""
    from onnx import helper

    g = m.graph
    outputs = {o.name for o in g.output}
    changed = True
    while changed:
        changed = False
        prod = {o: n for n in g.node for o in n.output}
        for n in list(g.node):
            if n.op_type != "Transpose" or n.input[0] not in prod:
                continue
            p = prod[n.input[0]]
            if p.op_type != "Transpose":
                continue
            p1, p2 = list(p.attribute[0].ints), list(n.attribute[0].ints)
            comp = [p1[i] for i in p2]
            src, dst = p.input[0], n.output[0]
            if comp == list(range(len(comp))):
                if dst in outputs:
                    n.op_type = "Identity"
                    del n.attribute[:]
                    n.input[0] = src
                else:
                    _rewire(g, dst, src)
                    g.node.remove(n)
            else:
                n.input[0] = src
                del n.attribute[:]
                n.attribute.append(helper.make_attribute("perm", comp))
            if not any(p.output[0] in q.input for q in g.node) and p.output[0] not in outputs:
                g.node.remove(p)
            changed = True
            break

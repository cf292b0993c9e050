"""Rewrite the int8 face model to take uint8 BGR pixels packed 2x2 (:mod:`firmware.models.
packing`), with the same outputs to the last bit.

Three changes to the quantized (QDQ) graph's first layer, each exact:

1. **uint8 in, not float.** The graph's first node quantizes the float input back to uint8.
   Pixels are whole numbers 0-255, so scale 1 and zero point 0 represent every one exactly (the
   calibration finds the same range); the float copy, onnxruntime's NCHW-to-NHWC transpose and
   that QuantizeLinear go, and uint8 pixels feed the first dequantization directly.
2. **BGR, not RGB.** The first convolution's weights are reversed on their input-channel axis,
   so the decoder's BGR frame is fed as it is.
3. **Packed 2x2.** The first layer is a 3x3 convolution with stride 2 on 3 channels, the shape
   onnxruntime's int8 kernel handles worst. Rows ``2i-1 .. 2i+1`` (and the same columns) of the
   input fall in blocks ``i-1`` and ``i`` of a 2x2 packing, so the layer equals a 2x2
   convolution with stride 1 over the 12-channel packed input, padded by one block at the top
   and left: each 3x3 tap moves to its block and position, and the four taps of the 4x4 window
   that the 3x3 kernel does not reach are zero.

Measured on vtest.avi frames (768x576, onnxruntime 1.32, one thread, AVX-512 VNNI, 5 rounds
side by side): 31.0 ms a frame for the plain int8 graph fed a float blob, 29.4 ms with changes 1
and 2, 29.0-29.3 ms with all three (the first layer 4.8 -> 2.2 ms; packing the pixels costs
0.8 ms). The outputs of all three graphs were identical (largest difference 0.0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from firmware.errors import ModelError
from firmware.models.packing import PACKED_CHANNELS

_HINT = "make the int8 model from the manifest's CenterFace ('anoncam models quantize')"


def _only(nodes: list[Any], what: str) -> Any:
    if len(nodes) != 1:
        raise ModelError(f"cannot pack the model's input: {what} ({len(nodes)} found)", hint=_HINT)
    return nodes[0]


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def pack_input(model: Any) -> None:
    """Rewrite ``model`` (an ``onnx.ModelProto`` of the quantized CenterFace) in place; the
    graph input keeps its name. :class:`ModelError` when the first layer is not the expected
    quantize, dequantize, 3x3 stride-2 convolution on 3 channels."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.input) != 1:
        raise ModelError("cannot pack the model's input: it has several inputs", hint=_HINT)
    source = graph.input[0].name
    nodes = list(graph.node)
    weights = {i.name: i for i in graph.initializer}

    def consumers(name: str, op: str) -> list[Any]:
        return [n for n in nodes if n.op_type == op and name in n.input]

    quantize = _only(consumers(source, "QuantizeLinear"), "one QuantizeLinear of the input")
    dequantize = _only(
        consumers(quantize.output[0], "DequantizeLinear"), "one DequantizeLinear after it"
    )
    conv = _only(
        [n for n in consumers(dequantize.output[0], "Conv") if n.input[0] == dequantize.output[0]],
        "one Conv reading the input",
    )
    attrs = _attributes(conv)
    if (
        list(attrs.get("kernel_shape", [])) != [3, 3]
        or list(attrs.get("strides", [1, 1])) != [2, 2]
        or list(attrs.get("pads", [0, 0, 0, 0])) != [1, 1, 1, 1]
        or list(attrs.get("dilations", [1, 1])) != [1, 1]
        or attrs.get("group", 1) != 1
    ):
        raise ModelError(
            f"cannot pack the model's input: its first Conv is not 3x3, stride 2, pad 1 ({attrs})",
            hint=_HINT,
        )
    weight_dq = _only(
        [n for n in nodes if n.op_type == "DequantizeLinear" and conv.input[1] in n.output],
        "one DequantizeLinear of the first Conv's weights",
    )
    if weight_dq.input[0] not in weights or len(weight_dq.input) < 3:
        raise ModelError("cannot pack the model's input: unexpected weight layout", hint=_HINT)
    w = numpy_helper.to_array(weights[weight_dq.input[0]])
    zero = numpy_helper.to_array(weights[weight_dq.input[2]])
    if w.ndim != 4 or w.shape[1:] != (3, 3, 3):
        raise ModelError(
            f"cannot pack the model's input: first weights are {w.shape}, not (O, 3, 3, 3)",
            hint=_HINT,
        )
    bgr = w[:, ::-1]  # RGB -> BGR on the input-channel axis
    # taps the 3x3 kernel does not reach hold the zero point, which dequantizes to exactly 0
    packed = np.empty((w.shape[0], PACKED_CHANNELS, 2, 2), w.dtype)
    packed[...] = np.broadcast_to(zero, (w.shape[0],)).reshape(-1, 1, 1, 1)
    for block_y in range(2):
        for block_x in range(2):
            for dy in range(2):
                for dx in range(2):
                    ky, kx = 2 * block_y + dy - 1, 2 * block_x + dx - 1
                    if 0 <= ky < 3 and 0 <= kx < 3:
                        first = (dy * 2 + dx) * 3
                        packed[:, first : first + 3, block_y, block_x] = bgr[:, :, ky, kx]
    weights[weight_dq.input[0]].CopyFrom(numpy_helper.from_array(packed, weight_dq.input[0]))
    del conv.attribute[:]
    conv.attribute.extend(
        [
            helper.make_attribute("kernel_shape", [2, 2]),
            helper.make_attribute("strides", [1, 1]),
            helper.make_attribute("pads", [1, 1, 0, 0]),
            helper.make_attribute("dilations", [1, 1]),
            helper.make_attribute("group", 1),
        ]
    )
    # pixels in as they are: scale 1, zero point 0 represent 0-255 exactly
    for name, value in ((dequantize.input[1], np.float32(1.0)), (dequantize.input[2], np.uint8(0))):
        if name not in weights:
            raise ModelError("cannot pack the model's input: its scale is computed", hint=_HINT)
        weights[name].CopyFrom(numpy_helper.from_array(np.array(value), name))
    index = nodes.index(quantize)
    graph.node.remove(quantize)
    graph.node.insert(
        index,
        helper.make_node(
            "Transpose", [source], [quantize.output[0]], perm=[0, 3, 1, 2], name="packed_to_nchw"
        ),
    )
    tensor = graph.input[0].type.tensor_type
    tensor.elem_type = TensorProto.UINT8
    dims = tensor.shape.dim
    for d, param in zip(dims[1:3], ("H_half", "W_half"), strict=True):
        d.Clear()
        d.dim_param = param
    dims[3].Clear()
    dims[3].dim_value = PACKED_CHANNELS  # dims[0], the batch, stays as it was
    del graph.value_info[:]  # shapes inferred for the old input no longer hold

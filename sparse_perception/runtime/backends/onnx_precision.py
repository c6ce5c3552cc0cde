"""The numeric precision an ONNX file actually holds, read from its graph (no ``onnx`` package needed).

A model's name or manifest can say anything; ``engine_status`` reports what was loaded:

- ``int8``: the graph has quantisation operators (``QuantizeLinear`` / ``DequantizeLinear`` of a QDQ
  model, ``QLinear*`` / ``*Integer`` / ``DynamicQuantizeLinear`` of an operator-quantised one);
- ``fp16``: the image input is float16, or (where the ``onnx`` package is installed) most weight
  initializers are (a model converted with float32 I/O kept);
- ``fp32`` otherwise.

Operators are found by their exact protobuf encoding in ``NodeProto.op_type`` (field 4, length
delimited: tag byte ``0x22``, the length, the name), so a tensor or node *named* like an operator
does not count.
"""
from __future__ import annotations

import mmap
from pathlib import Path

__all__ = ["QUANT_OPS", "onnx_precision"]

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
             "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearConcat", "QLinearLeakyRelu",
             "QLinearAveragePool", "QLinearGlobalAveragePool", "ConvInteger", "MatMulInteger")
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def _op_type(name: str) -> bytes:
    return b"\x22" + bytes([len(name)]) + name.encode()


def onnx_precision(path: str | Path, input_type: str | None = None) -> str:
    """``int8`` | ``fp16`` | ``fp32`` of the ONNX at ``path``.

    :param input_type: ONNX Runtime's type string of the image input (``tensor(float16)`` …); None: read
        from the graph (needs ``onnx``).
    :raises Exception: (``input_type`` None or ``onnx`` installed) the file does not parse as ONNX.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if any(data.find(_op_type(op)) >= 0 for op in QUANT_OPS):
            return "int8"
    if input_type == "tensor(float16)":
        return "fp16"
    try:
        import onnx
    except ImportError:  # the node's runtime needs only ONNX Runtime: the input type decides
        if input_type is None:
            raise
        return "fp32"
    graph = onnx.load(str(path), load_external_data=False).graph
    if input_type is None and any(i.type.tensor_type.elem_type == _FLOAT16 for i in graph.input):
        return "fp16"
    halves = sum(t.data_type == _FLOAT16 for t in graph.initializer)
    return "fp16" if halves * 2 > len(graph.initializer) else "fp32"

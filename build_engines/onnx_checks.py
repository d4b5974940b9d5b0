"""Structural checks that an exported ONNX graph will go through TensorRT's ONNX parser with
the optimization profiles we build it with. They run anywhere (only the `onnx` package), so a
change to the export that TensorRT would reject fails on a CPU machine, not on the GPU node.

The operator list and restrictions are those of onnx-tensorrt's docs/operators.md for
TensorRT 10.0 (opsets 9..20).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnx

MIN_OPSET, MAX_OPSET = 9, 20

TRT10_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
    CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
    Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish
    Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu
    Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size
    Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
    ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()  # noqa: SIM905 -- the names as operators.md lists them
)

# Inputs TensorRT needs as constants ("`axes` must be an initializer", "weights must be an
# initializer"): op type -> input indices.
CONSTANT_INPUTS = {
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "ReduceMean": (1,),
    "ReduceSum": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "Slice": (3,),
    "Pad": (3,),
    "Conv": (1,),
    "ConvTranspose": (1,),
}
TENSOR_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}

Shape = tuple[int, ...]
Profile = Mapping[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max)


class TensorRTIncompatible(Exception):
    """The graph would not build as a TensorRT engine with the given profile."""


def _dims(value_info) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def problems(model: onnx.ModelProto, profile: Profile) -> list[str]:
    """Everything in `model` that TensorRT 10 or `profile` would reject, as sentences."""
    found: list[str] = []
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        found.append(f"opset {opset} is outside TensorRT 10's range {MIN_OPSET}..{MAX_OPSET}")
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    for node in graph.node:
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            found.append(f"{where} is in custom domain {node.domain!r} (needs a plugin)")
        elif node.op_type not in TRT10_OPS:
            found.append(f"{where}: operator not supported by TensorRT's ONNX parser")
        for i in CONSTANT_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] and node.input[i] not in constants:
                found.append(f"{where}: input {i} ({node.input[i]!r}) must be a constant for TensorRT")
        if node.op_type == "Einsum":
            equation = next(a.s.decode() for a in node.attribute if a.name == "equation")
            if "..." in equation:
                found.append(f"{where}: ellipsis in equation {equation!r}")
    inputs = {i.name: i for i in graph.input if i.name not in constants}
    for name in sorted(set(profile) - set(inputs)):
        found.append(f"profile names input {name!r} that the graph does not have")
    for name, value_info in inputs.items():
        if value_info.type.tensor_type.elem_type not in TENSOR_TYPES:
            found.append(f"input {name!r} has element type {value_info.type.tensor_type.elem_type}, not float")
        if name not in profile:
            found.append(f"input {name!r} has no optimization profile")
            continue
        lo, opt, hi = profile[name]
        dims = _dims(value_info)
        if not len(dims) == len(lo) == len(opt) == len(hi):
            found.append(f"input {name!r} has rank {len(dims)}, the profile {lo}..{hi}")
            continue
        for axis, (d, a, o, b) in enumerate(zip(dims, lo, opt, hi, strict=True)):
            if not 1 <= a <= o <= b:
                found.append(f"input {name!r} axis {axis}: profile min/opt/max {a}/{o}/{b} not ordered")
            if isinstance(d, int) and d > 0 and not a == o == b == d:
                found.append(f"input {name!r} axis {axis} is fixed at {d} but the profile ranges {a}..{b}")
    for out in graph.output:
        if out.type.tensor_type.elem_type not in TENSOR_TYPES:
            found.append(f"output {out.name!r} has element type {out.type.tensor_type.elem_type}, not float")
    return found


def check_tensorrt_compatible(path: Path, profile: Profile) -> None:
    model = onnx.load(str(path), load_external_data=False)
    found = problems(model, profile)
    if found:
        raise TensorRTIncompatible(f"{path.name}: " + "; ".join(found))

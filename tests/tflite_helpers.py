"""Building small TFLite models with TensorFlow and running them in LiteRT (the references for
the engine's tests)."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from conftest import require

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def convert_function(fn, input_shapes, **converter_options) -> bytes:
    tf = require("tensorflow")
    specs = [tf.TensorSpec(s, tf.float32) for s in input_shapes]
    concrete = tf.function(fn).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    for key, value in converter_options.items():
        setattr(converter, key, value)
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def convert_keras(model, **converter_options) -> bytes:
    tf = require("tensorflow")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    for key, value in converter_options.items():
        setattr(converter, key, value)
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def op_names(flatbuffer: bytes) -> list[str]:
    import tflite
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(flatbuffer, 0)
    sg = model.Subgraphs(0)
    out = []
    for i in range(sg.OperatorsLength()):
        code = model.OperatorCodes(sg.Operators(i).OpcodeIndex())
        out.append(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return out


def reshape_as_squeeze(flatbuffer: bytes, squeeze_dims: list[int]) -> bytes:
    """The converter writes tf.squeeze as RESHAPE; this rewrites a one-RESHAPE model into a
    genuine SQUEEZE operator (with SqueezeOptions) that LiteRT itself runs."""
    require("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    (op,) = model.subgraphs[0].operators
    code = model.operatorCodes[op.opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SQUEEZE
    options = schema.SqueezeOptionsT()
    options.squeezeDims = squeeze_dims
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.SqueezeOptions, options
    op.inputs = op.inputs[:1]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def litert_run(flatbuffer: bytes, inputs: list[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    litert = require("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    for detail, x in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def assert_matches(got, want, rtol: float = 1e-4, what: str = ""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol} x max |ref| {scale:.3g}"

"""Building small TFLite models with TensorFlow and running them in LiteRT (the references for
the engine's tests)."""

from __future__ import annotations

import contextlib
import io
import os
import struct

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


def mediapipe_custom_ops_model(size: tuple[int, int] = (8, 10), seed: int = 0) -> bytes:
    """A segmentation-style model with MediaPipe's custom ops, as its converter writes them:
    conv -> MaxPoolingWithArgmax2D -> 1x1 conv -> MaxUnpooling2D (with the pooling's indices) ->
    Convolution2DTransposeBias. Built by converting the Keras model with MAX_POOL_2D,
    RESIZE_NEAREST_NEIGHBOR and TRANSPOSE_CONV in their places, then rewriting those three ops in
    the flatbuffer (the TFLite converter cannot emit these custom ops)."""
    tf = require("tensorflow")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((*size, 3))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = tf.keras.layers.MaxPool2D(2, padding="same")(x)
    x = tf.keras.layers.Conv2D(4, 1)(x)
    pooled = (-(-size[0] // 2), -(-size[1] // 2))
    x = tf.keras.layers.Resizing(2 * pooled[0], 2 * pooled[1], interpolation="nearest")(x)
    x = tf.keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", use_bias=False)(x)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(convert_keras(tf.keras.Model(inp, x))))
    sg = model.subgraphs[0]

    def custom(name: str) -> int:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode, code.version = name.encode(), 1
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def tensor(name: str, shape, dtype, data: bytes | None = None) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type = name.encode(), list(shape), dtype
        buffer = schema.BufferT()
        buffer.data = list(data) if data else None
        model.buffers.append(buffer)
        t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    indices = None
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        if code == schema.BuiltinOperator.MAX_POOL_2D:
            o = op.builtinOptions
            indices = tensor("indices", sg.tensors[op.outputs[0]].shape, schema.TensorType.FLOAT32)  # as MediaPipe's
            op.outputs = [op.outputs[0], indices]
            params = (1 if o.padding == schema.Padding.SAME else 2, o.strideW, o.strideH, o.filterWidth, o.filterHeight, 0)
            op.opcodeIndex, op.customOptions = custom("MaxPoolingWithArgmax2D"), list(struct.pack("<6i", *params))
        elif code == schema.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR:
            op.inputs = [op.inputs[0], indices]
            op.opcodeIndex, op.customOptions = custom("MaxUnpooling2D"), list(struct.pack("<6i", 2, 2, 2, 2, 2, 0))
        elif code == schema.BuiltinOperator.TRANSPOSE_CONV:
            o = op.builtinOptions
            out_c = sg.tensors[op.outputs[0]].shape[-1]
            bias = tensor("bias", [out_c], schema.TensorType.FLOAT32,
                          np.linspace(-1, 1, out_c, dtype=np.float32).tobytes())
            op.inputs = [op.inputs[2], op.inputs[1], bias]  # TRANSPOSE_CONV: output shape, weights, input
            params = (1 if o.padding == schema.Padding.SAME else 2, o.strideW, o.strideH)
            op.opcodeIndex, op.customOptions = custom("Convolution2DTransposeBias"), list(struct.pack("<3i", *params))
        else:
            continue
        op.builtinOptionsType, op.builtinOptions = 0, None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

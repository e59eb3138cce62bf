"""ONNX files as PyTorch writes them (NCHW, OIHW kernels, explicit pads), made from a
trained tf_keras model's weights with onnx.helper: a learned classifier in ONNX without
PyTorch on the machine."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgefire.tfenv import keras


def from_keras(model, logits: bool = True, opset: int = 17):
    """The ONNX graph of a Sequential-like functional tf_keras model of Conv2D (ReLU or
    linear, 'same' or 'valid'), MaxPooling2D, Concatenate, Add, Dropout, global average
    pooling and Softmax: the same function, in NCHW. With `logits` the softmax is left out,
    as PyTorch classifiers end."""
    layers = keras().layers
    nodes, weights = [], []
    names = {model.layers[0].name: "x"}

    def inputs_of(layer):
        inbound = layer._inbound_nodes[0].inbound_layers
        return [names[i.name] for i in (inbound if isinstance(inbound, list) else [inbound])]

    for layer in model.layers[1:]:
        ins, out = inputs_of(layer), layer.name
        if isinstance(layer, layers.Conv2D):
            kernel, bias = layer.get_weights()
            k = kernel.shape[0]
            pad = k // 2 if layer.padding == "same" else 0
            weights += [numpy_helper.from_array(kernel.transpose(3, 2, 0, 1), f"{out}.w"),
                        numpy_helper.from_array(bias, f"{out}.b")]
            relu = layer.activation.__name__ == "relu"
            nodes.append(helper.make_node("Conv", [ins[0], f"{out}.w", f"{out}.b"],
                                          [f"{out}.conv" if relu else out], name=out,
                                          kernel_shape=[k, k], strides=list(layer.strides),
                                          pads=[pad] * 4))
            if relu:
                nodes.append(helper.make_node("Relu", [f"{out}.conv"], [out]))
        elif isinstance(layer, layers.MaxPooling2D):
            nodes.append(helper.make_node("MaxPool", ins, [out], name=out,
                                          kernel_shape=list(layer.pool_size),
                                          strides=list(layer.strides)))
        elif isinstance(layer, layers.Concatenate):
            nodes.append(helper.make_node("Concat", ins, [out], name=out, axis=1))
        elif isinstance(layer, layers.Add):
            nodes.append(helper.make_node("Add", ins, [out], name=out))
        elif isinstance(layer, layers.Dropout):
            nodes.append(helper.make_node("Dropout", ins, [out], name=out))
        elif isinstance(layer, layers.GlobalAveragePooling2D):
            nodes += [helper.make_node("GlobalAveragePool", ins, [f"{out}.pool"], name=out),
                      helper.make_node("Flatten", [f"{out}.pool"], [out])]
        elif isinstance(layer, layers.Softmax):
            if logits:
                names[layer.name] = ins[0]
                continue
            nodes.append(helper.make_node("Softmax", ins, [out], name=out, axis=1))
        else:
            raise ValueError(f"no ONNX form for {type(layer).__name__}")
        names[layer.name] = out
    size = model.input_shape[1]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])
    y = helper.make_tensor_value_info(names[model.layers[-1].name], TensorProto.FLOAT,
                                      ["batch", model.output_shape[-1]])
    graph = helper.make_graph(nodes, "classifier", [x], [y], weights)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="tests.onnx_models")
    onnx_model.ir_version = 8
    return onnx_model


def scores(onnx_path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": images.transpose(0, 3, 1, 2).astype(np.float32)})[0]

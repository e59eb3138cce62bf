"""A TFLite flatbuffer opened for editing and written back, and its tensor names made short.

The TFLite converter names a tensor after every operation fused into it, in full
(`squeezenet/fire5/expand3x3_relu/Relu;squeezenet/fire5/expand3x3/BiasAdd;...`): 4,970
bytes of the 95,778-byte channel-pruned int8 file, flash on the device that buys nothing
there. Each internal name is cut to its first operation, without the model's name in front
(`fire5/expand3x3_relu/Relu`), still readable in Netron or a runtime's profile; the input and
output keep theirs (apps, signatures and the manifest name them).
"""

from __future__ import annotations

import flatbuffers


def schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def unpack(tflite: bytes):
    """The model as schema.ModelT, every table an object to edit."""
    return schema().ModelT.InitFromObj(schema().Model.GetRootAsModel(tflite, 0))


def pack(model, size_hint: int = 1024) -> bytes:
    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def shorten_names(model) -> None:
    """Each subgraph's internal tensor names cut to their first operation, the prefix that
    all of them share (the Keras model's name) dropped; a repeated name gets a number."""
    for subgraph in model.subgraphs or []:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        names = {i: _first_operation(t.name) for i, t in enumerate(subgraph.tensors)
                 if i not in keep}
        prefix = _shared_prefix(list(names.values()))
        taken = {_text(subgraph.tensors[i].name) for i in keep}
        for index, name in names.items():
            short = name.removeprefix(prefix)
            unique, count = short, 1
            while unique in taken:
                count += 1
                unique = f"{short}_{count}"
            taken.add(unique)
            subgraph.tensors[index].name = unique


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else (name or "")


def _first_operation(name) -> str:
    return _text(name).split(";")[0]


def _shared_prefix(names: list[str]) -> str:
    """`model/` when every name that has a path starts with the same first component (the
    converter's own tensors, `tfl.quantize`, have none)."""
    heads = {name.split("/", 1)[0] for name in names if "/" in name}
    return f"{heads.pop()}/" if len(heads) == 1 else ""


def operators(tflite: bytes, float_only: bool = False) -> list[str]:
    """The operators of the main subgraph in order of first use, by their builtin names
    (`CONV_2D`) or a custom operator's own name: what a TFLite Micro op resolver registers.
    `float_only`: those that compute in float (an output of type FLOAT32), which the
    accuracy-aware fallback keeps, and which run as float kernels on a microcontroller."""
    model = schema().Model.GetRootAsModel(tflite, 0)
    builtin = {code: name for name, code in vars(schema().BuiltinOperator).items()
               if not name.startswith("_")}
    graph = model.Subgraphs(0)
    used = []
    for index in range(graph.OperatorsLength()):
        operator = graph.Operators(index)
        outputs = [graph.Tensors(operator.Outputs(i)).Type()
                   for i in range(operator.OutputsLength())]
        if float_only and schema().TensorType.FLOAT32 not in outputs:
            continue
        code = model.OperatorCodes(operator.OpcodeIndex())
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        used.append(_text(custom) if number == builtin_code("CUSTOM") else builtin[number])
    return list(dict.fromkeys(used))


def builtin_code(name: str) -> int:
    return getattr(schema().BuiltinOperator, name)


def byte_breakdown(tflite: bytes) -> dict[str, int]:
    """Where a `.tflite`'s bytes go: the tensors' data (weights, biases), their quantization
    parameters (per channel: a float32 scale and an int64 zero point each, as the schema
    stores them), tensor names, metadata (labels, normalization), and the rest: the
    flatbuffer's tables (operators, shapes, offsets, alignment)."""
    model = schema().Model.GetRootAsModel(tflite, 0)
    metadata = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    used, parameters, names = set(), 0, 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            used.add(tensor.Buffer())
            names += len(tensor.Name() or b"")
            q = tensor.Quantization()
            if q is not None:
                parameters += 4 * (q.ScaleLength() + q.MinLength() + q.MaxLength()) + \
                    8 * q.ZeroPointLength()
    data = sum(model.Buffers(b).DataLength() for b in used - metadata)
    meta = sum(model.Buffers(b).DataLength() for b in metadata)
    parts = {"tensor_data": data, "quantization_parameters": parameters, "names": names,
             "metadata": meta}
    return {**parts, "tables": len(tflite) - sum(parts.values())}

"""TFLite model metadata for an image classifier, so MediaPipe Tasks loads the file as it is.

The metadata flatbuffer (file identifier "M001", schema of tflite-support's
metadata_schema.fbs, version 1.0.0 fields only) is written here with the plain flatbuffers
Builder: tflite-support pins protobuf 3.20 and mediapipe pins absl-py 2, neither of which can
share an environment with TensorFlow and tensorflow-model-optimization. It says: input is an
RGB image normalized as (pixel - mean) / std; output is a feature vector whose axis is
labelled by `labels.txt`, which is packed into the model as a zip archive appended to the
flatbuffer (TFLite ignores trailing bytes; metadata readers open the zip).
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers

from edgefire import layout, tflite_file
from edgefire.contract import InputContract

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = layout.LABELS  # packed into the model under the same name
MIN_PARSER_VERSION = "1.0.0"
# union type tags and enum values of metadata_schema.fbs
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2
OPTIONS_NORMALIZATION = 1
COLOR_RGB = 1
TENSOR_AXIS_LABELS = 2


def _floats(builder, values) -> int:
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(value)
    return builder.EndVector()


def _offsets(builder, offsets) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _table(builder, fields: list[tuple[int, str, object]]) -> int:
    """A table from (slot, kind, value) fields; kind is 'offset', 'byte' or 'uint32'."""
    builder.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "byte":
            builder.PrependUint8Slot(slot, value, 0)
        else:
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _empty_table(builder) -> int:
    builder.StartObject(0)
    return builder.EndObject()


def _content(builder, kind: int, properties: int) -> int:
    return _table(builder, [(0, "byte", kind), (1, "offset", properties)])


def _stats(builder, low: float, high: float) -> int:
    return _table(builder, [(0, "offset", _floats(builder, [high])),
                            (1, "offset", _floats(builder, [low]))])


def classifier_metadata(name: str, mean: list[float], std: list[float], labels_file: str,
                        size: tuple[int, int]) -> bytes:
    """The ModelMetadata flatbuffer of an RGB image classifier with a label file."""
    b = flatbuffers.Builder(1024)
    image_size = _table(b, [(0, "uint32", size[1]), (1, "uint32", size[0])])
    image = _table(b, [(0, "byte", COLOR_RGB), (1, "offset", image_size)])
    normalization = _table(b, [(0, "offset", _floats(b, mean)), (1, "offset", _floats(b, std))])
    unit = _table(b, [(0, "byte", OPTIONS_NORMALIZATION), (1, "offset", normalization)])
    input_tensor = _table(b, [
        (0, "offset", b.CreateString("image")),
        (1, "offset", b.CreateString("RGB image, NHWC; pixel values as the camera gives them")),
        (3, "offset", _content(b, CONTENT_IMAGE, image)),
        (4, "offset", _offsets(b, [unit])),
        (5, "offset", _stats(b, 0.0, 255.0))])
    labels = _table(b, [(0, "offset", b.CreateString(labels_file)),
                        (1, "offset", b.CreateString("class names, one a line")),
                        (2, "byte", TENSOR_AXIS_LABELS)])
    feature = _empty_table(b)
    output_tensor = _table(b, [
        (0, "offset", b.CreateString("probability")),
        (1, "offset", b.CreateString("class scores, one per label")),
        (3, "offset", _content(b, CONTENT_FEATURE, feature)),
        (5, "offset", _stats(b, 0.0, 1.0)),
        (6, "offset", _offsets(b, [labels]))])
    subgraph = _table(b, [(2, "offset", _offsets(b, [input_tensor])),
                          (3, "offset", _offsets(b, [output_tensor]))])
    model = _table(b, [(0, "offset", b.CreateString(name)),
                       (1, "offset", b.CreateString("CIFAR-style image classifier by edgefire")),
                       (3, "offset", _offsets(b, [subgraph])),
                       (7, "offset", b.CreateString(MIN_PARSER_VERSION))])
    b.Finish(model, file_identifier=b"M001")
    return bytes(b.Output())


def with_metadata(tflite: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """The model with `metadata` as its TFLITE_METADATA buffer and `files` zipped after it, its
    tensor names made short (`tflite_file.shorten_names`)."""
    schema = tflite_file.schema()
    model = tflite_file.unpack(tflite)
    tflite_file.shorten_names(model)
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()]
    buffer = schema.BufferT()
    buffer.data = list(metadata)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    packed = tflite_file.pack(model, len(tflite) + len(metadata) + 1024)
    out = io.BytesIO(packed)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # no timestamps
            archive.writestr(info, content)
    return out.getvalue()


def labels_text(classes: list[str]) -> str:
    """labels.txt: the class names in index order, one a line (UTF-8)."""
    return "".join(f"{c}\n" for c in classes)


def attach(tflite: bytes, name: str, classes: list[str], contract: InputContract) -> bytes:
    """The classifier's metadata and labels.txt, in the model as MediaPipe expects them.

    Input size and normalization are the build's input contract; MediaPipe takes one mean
    and one std for all channels, which the contract's equal channels allow.
    """
    meta = classifier_metadata(name, [contract.mean[0]], [contract.std[0]], LABELS_FILE,
                               (contract.size, contract.size))
    return with_metadata(tflite, meta, {LABELS_FILE: labels_text(classes).encode()})

"""ONNX operators made into tf_keras layers, each checked against onnxruntime on random
inputs (graphs made with onnx.helper): the converted layers give the file's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefire.errors import EdgefireError
from edgefire.models import from_onnx
from edgefire.tfenv import keras

RNG = np.random.default_rng(0)


def model_of(nodes, initializers, size=8, channels=3, out_shape=None, opset=17):
    """A one-input graph of `nodes` on an (N, channels, size, size) input named x, whose
    output is named y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype
                                                == np.float64 else np.asarray(v).dtype), k)
             for k, v in initializers.items()]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def outputs_agree(model, tmp_path, size=8, atol=1e-4):
    """The converted graph's output equals onnxruntime's on random images."""
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    inputs, graph = from_onnx.walk(model, Path(path), size)
    out = graph.values["y"]
    images = RNG.normal(0, 1, (3, size, size, 3)).astype(np.float32)
    ours = keras().Model(inputs, out.tensor).predict(images, verbose=0)
    theirs = from_onnx.onnxruntime_scores(Path(path), images)
    if ours.ndim == 4:
        ours = ours.transpose(0, 3, 1, 2)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=1e-4)


def conv_node(name="conv", **attrs):
    return helper.make_node("Conv", ["x", "w", "b"], ["y"], name=name, **attrs)


@pytest.mark.parametrize("attrs, w_shape", [
    ({"pads": [1, 1, 1, 1]}, (4, 3, 3, 3)),
    ({"pads": [0, 1, 2, 1], "strides": [2, 2]}, (4, 3, 3, 3)),  # asymmetric
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (4, 3, 3, 3)),
    ({"group": 3, "pads": [1, 1, 1, 1]}, (3, 1, 3, 3)),  # depthwise
    ({"group": 3}, (6, 1, 3, 3)),  # depthwise, channel multiplier 2
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (4, 3, 3, 3)),
])
def test_conv(attrs, w_shape, tmp_path):
    weights = {"w": RNG.normal(0, 1, w_shape), "b": RNG.normal(0, 1, w_shape[0])}
    outputs_agree(model_of([conv_node(**attrs)], weights), tmp_path)


def test_grouped_conv(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w0"], ["x4"], name="stem"),  # 3 -> 4 channels
             helper.make_node("Conv", ["x4", "w", "b"], ["y"], name="grouped", group=2)]
    inits = {"w0": RNG.normal(0, 1, (4, 3, 1, 1)), "w": RNG.normal(0, 1, (6, 2, 3, 3)),
             "b": RNG.normal(0, 1, 6)}
    outputs_agree(model_of(nodes, inits), tmp_path)


@pytest.mark.parametrize("node, inits", [
    (helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3),
     {"s": RNG.uniform(0.5, 2, 3), "b": RNG.normal(0, 1, 3), "m": RNG.normal(0, 1, 3),
      "v": RNG.uniform(0.5, 2, 3)}),
    (helper.make_node("Relu", ["x"], ["y"]), {}),
    (helper.make_node("Clip", ["x", "lo", "hi"], ["y"]), {"lo": np.float32(0),
                                                          "hi": np.float32(6)}),
    (helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1), {}),
    (helper.make_node("PRelu", ["x", "slope"], ["y"]), {"slope": RNG.uniform(0, 1, (3, 1, 1))}),
    (helper.make_node("Sigmoid", ["x"], ["y"]), {}),
    (helper.make_node("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5), {}),
    (helper.make_node("HardSwish", ["x"], ["y"]), {}),
    (helper.make_node("Mul", ["x", "c"], ["y"]), {"c": RNG.normal(0, 1, (1, 3, 1, 1))}),
    (helper.make_node("Add", ["c", "x"], ["y"]), {"c": RNG.normal(0, 1, (3, 1, 1))}),
    (helper.make_node("Sub", ["x", "c"], ["y"]), {"c": np.float32(0.5)}),
    (helper.make_node("Div", ["x", "c"], ["y"]), {"c": np.float32(4.0)}),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      ceil_mode=1), {}),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      pads=[1, 1, 1, 1]), {}),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2]), {}),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[1, 1],
                      pads=[1, 1, 1, 1], count_include_pad=1), {}),
    (helper.make_node("GlobalAveragePool", ["x"], ["y"]), {}),
    (helper.make_node("GlobalMaxPool", ["x"], ["y"]), {}),
    (helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1), {}),
    (helper.make_node("Flatten", ["x"], ["y"]), {}),
    (helper.make_node("Identity", ["x"], ["y"]), {}),
], ids=lambda v: v.op_type if hasattr(v, "op_type") else "")
def test_operator(node, inits, tmp_path):
    outputs_agree(model_of([node], inits, size=9), tmp_path, size=9)


def test_reduce_mean_takes_its_axes_as_an_input_at_opset_18(tmp_path):
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    model = model_of([node], {"axes": np.array([2, 3], np.int64)}, opset=18)
    outputs_agree(model, tmp_path)


def test_squeeze_and_excitation_broadcasts_a_channel_scale(tmp_path):
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["g"]),
             helper.make_node("Mul", ["x", "g"], ["y"])]
    inits = {"w1": RNG.normal(0, 1, (2, 3, 1, 1)), "w2": RNG.normal(0, 1, (3, 2, 1, 1))}
    outputs_agree(model_of(nodes, inits), tmp_path)


def test_view_n_minus_1_then_gemm_and_matmul_add(tmp_path):
    """`x.view(x.size(0), -1)` as the TorchScript exporter writes it, then the head."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["rows"]),
             helper.make_node("Gemm", ["rows", "w", "b"], ["h"], transB=1),
             helper.make_node("MatMul", ["h", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b2"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "axis0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64), "w": RNG.normal(0, 1, (5, 3 * 4 * 4)),
             "b": RNG.normal(0, 1, 5), "w2": RNG.normal(0, 1, (5, 4)),
             "b2": RNG.normal(0, 1, 4)}
    outputs_agree(model_of(nodes, inits, size=4), tmp_path, size=4)


def test_an_unknown_operator_is_one_line_naming_it_and_its_node(tmp_path):
    node = helper.make_node("Erf", ["x"], ["y"], name="mystery")
    with pytest.raises(EdgefireError, match=r"node 'mystery' \(Erf\) is an operator edgefire "
                                            r"cannot convert yet"):
        from_onnx.walk(model_of([node], {}), Path(tmp_path / "m.onnx"), 8)


def test_a_custom_domain_operator_is_refused_by_name(tmp_path):
    node = helper.make_node("Evil", ["x"], ["y"], name="n", domain="com.example")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.example", 1)])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(EdgefireError, match="'Evil' of domain 'com.example'"):
        from_onnx.read(tmp_path / "m.onnx")


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    model = model_of([conv_node()], {"w": RNG.normal(0, 1, (4, 3, 3, 3)),
                                     "b": np.zeros(4)})
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    (tmp_path / "sub").mkdir()
    onnx.save(model, tmp_path / "sub" / "m.onnx")
    with pytest.raises(EdgefireError, match="outside the model's folder; not read"):
        from_onnx.read(tmp_path / "sub" / "m.onnx")


@pytest.fixture(scope="module")
def trained_onnx(trained_folder, tmp_path_factory):
    """The tiny trained SqueezeNet as a PyTorch-style ONNX file that gives logits."""
    from edgefire import models
    from tests import onnx_models

    path = tmp_path_factory.mktemp("onnx") / "squeeze_torch.onnx"
    onnx.save(onnx_models.from_keras(models.load_model(trained_folder / "trained.h5")), path)
    return path


@pytest.mark.slow
def test_an_onnx_classifier_builds_as_it_is_with_its_equality_recorded(trained_onnx,
                                                                       image_folder,
                                                                       tmp_path):
    import json

    from typer.testing import CliRunner

    from edgefire.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", "--quantize", "int8", "--model",
                                      str(trained_onnx), "--epochs", "0", "--sparsity", "0",
                                      "--data", str(image_folder), "--micro-images", "20",
                                      "--artifacts", str(out)])
    assert result.exit_code == 0, result.output
    assert "gives logits: a softmax is appended" in result.output
    given = json.loads((out / "train.json").read_text())["given_model"]
    assert given["format"] == "onnx" and given["opset"] == 17
    assert given["equality"]["agreement"] == 1.0
    assert given["equality"]["max_score_difference"] < 1e-4
    from edgefire import data
    from tests import onnx_models

    test = data.load(str(image_folder))  # the file's own top-1, in onnxruntime, by hand
    own = np.mean(onnx_models.scores(trained_onnx, test.x_test / 255.0).argmax(1) ==
                  test.y_test)
    report = json.loads((out / "report.json").read_text())
    by_name = {r["name"]: r for r in report["artifacts"]}
    assert by_name["trained.h5"]["accuracy"] == pytest.approx(own, abs=1e-9)
    assert abs(by_name["squeeze_torch_int8.tflite"]["accuracy"] - own) <= 0.025
    assert own > 0.5 and report["passed"]
    row = by_name["squeeze_torch.onnx"]  # the user's file beside what was made from it
    assert row["given"] and row["accuracy"] == pytest.approx(own, abs=1e-9)
    assert row["agreement"] == 1.0 and list(row["runtimes"]) == ["onnxruntime"]
    assert "squeeze_torch.onnx" not in {g["artifact"] for g in report["gates"]}


@pytest.mark.slow
def test_an_onnx_classifier_fine_tunes_and_channel_prunes(trained_onnx, image_folder,
                                                          tmp_path):
    from typer.testing import CliRunner

    from edgefire.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", "--quantize", "int8", "--model",
                                      str(trained_onnx), "--epochs", "1", "--batch-size", "32",
                                      "--prune", "channels", "--channel-sparsity", "0.25",
                                      "--prune-epochs", "1", "--data", str(image_folder),
                                      "--micro-images", "20", "--max-drop", "100",
                                      "--artifacts", str(out)])
    assert result.exit_code == 0, result.output
    import json

    pruned = json.loads((out / "prune.json").read_text())
    assert pruned["parameters"]["after"] < pruned["parameters"]["before"]


def test_predict_runs_a_pytorch_style_onnx_file_and_gives_probabilities(trained_onnx,
                                                                        trained_folder,
                                                                        image_folder):
    import json
    import shutil

    from typer.testing import CliRunner

    from edgefire.cli import app

    images = sorted((image_folder / "test" / "ship").glob("*.png"))[:3]
    labels = trained_onnx.parent / "labels.txt"  # a foreign file's names sit beside it
    labels.write_text("\n".join(json.loads((trained_folder / "train.json").read_text())
                                 ["classes"]) + "\n")
    keras_file = shutil.copy(trained_folder / "trained.h5", trained_onnx.parent / "k.h5")
    own = CliRunner().invoke(app, ["predict", *map(str, images), "--artifacts",
                                   str(trained_folder), "--model", str(keras_file), "--json",
                                   "--top", "2"])
    assert own.exit_code == 0, own.output
    theirs = CliRunner().invoke(app, ["predict", *map(str, images), "--artifacts",
                                      str(trained_folder), "--model", str(trained_onnx),
                                      "--json", "--top", "2"])
    assert theirs.exit_code == 0, theirs.output
    for a, b in zip(json.loads(own.stdout), json.loads(theirs.stdout), strict=True):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert [t["score"] for t in a["top"]] == pytest.approx([t["score"] for t in b["top"]],
                                                               abs=1e-4)


@pytest.mark.slow
def test_a_conversion_that_disagrees_stops_the_build_naming_the_first_node(
        trained_onnx, image_folder, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgefire.cli import app
    from edgefire.models.from_onnx import ops

    def wrong_relu(graph, node, attrs):  # a fault planted in one operator's conversion
        layer = keras().layers.LeakyReLU(alpha=0.5, name=graph.name(node))
        return [from_onnx.Value(layer(graph.get(node, 0).tensor))]

    monkeypatch.setitem(ops.OPS, "Relu", wrong_relu)
    result = CliRunner().invoke(app, ["train", "--model", str(trained_onnx), "--epochs", "0",
                                      "--data", str(image_folder), "--artifacts",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    # the first Relu (after the stem convolution, whose output is named "conv") is the first
    # node that differs: the stem convolution before it still agrees
    assert "the first node whose outputs differ: 'conv' (Relu)" in result.output, result.output
    assert not (tmp_path / "out" / "trained.h5").exists()


def _classifier_file(tmp_path, dims) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", dims[1]])
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "c.onnx"
    onnx.save(model, path)
    return path


def test_the_input_size_comes_from_the_file_or_from_image_size(tmp_path):
    from edgefire.models import given

    fixed = _classifier_file(tmp_path, ["n", 3, 8, 8])
    assert given.open_model(str(fixed), None)[1] == 8
    with pytest.raises(EdgefireError, match="--image-size 16 disagrees with the model's fixed"):
        given.open_model(str(fixed), 16)
    free = _classifier_file(tmp_path, ["n", 3, "h", "w"])
    with pytest.raises(EdgefireError, match="takes any image size: give --image-size"):
        given.open_model(str(free), None)
    model, size, origin = given.open_model(str(free), 24)
    assert size == 24 and model.input_shape == (None, 24, 24, 3)
    assert origin["format"] == "onnx" and origin["softmax_appended"]
    with pytest.raises(EdgefireError, match="input has 1 channels"):
        given.open_model(str(_classifier_file(tmp_path, ["n", 1, 8, 8])), None)

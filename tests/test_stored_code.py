"""No model file runs code without --trust-model-code, by any route: a `Lambda` however it is
stored (no name, nested, wrapped), a `TFOpLambda` naming an I/O function, a SavedModel whose
graph writes a file while it is restored. Each planted file would write a marker if its code
ran; a positive control shows that it does when trusted."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgefire import models
from edgefire.cli import app
from edgefire.errors import EdgefireError
from edgefire.models import stored_code
from edgefire.tfenv import keras, tensorflow


def _writes(marker):
    """A function that writes `marker` and passes its input on: the planted code."""
    return lambda t, m=str(marker): (open(m, "w").close(), t)[1]


def _classifier(body):
    """A working 10-class classifier around `body` (a function of the input tensor)."""
    layers = keras().layers
    inputs = layers.Input((32, 32, 3), name="image")
    x = layers.GlobalAveragePooling2D()(body(inputs))
    return keras().Model(inputs, layers.Dense(10, activation="softmax")(x))


def _save_h5(model, path, marker, edit=None):
    """Save `model` as HDF5, optionally editing its stored config; the marker the build of
    the model wrote is removed, so only a later run counts."""
    model.save(path)
    if edit is not None:
        with h5py.File(path, "r+") as h5:
            config = json.loads(h5.attrs["model_config"])
            edit(config)
            h5.attrs["model_config"] = json.dumps(config)
    marker.unlink(missing_ok=True)
    return path


def _lambda_entries(config):
    return [entry for cls, _, entry in stored_code.stored_entries(config) if cls == "Lambda"]


def _nameless_lambda(config):
    for entry in _lambda_entries(config):
        del entry["config"]["name"]


def _nameless_lambda_file(tmp_path, marker):
    model = _classifier(lambda x: keras().layers.Lambda(_writes(marker), name="evil")(x))
    return _save_h5(model, tmp_path / "evil.h5", marker, _nameless_lambda)


def test_the_nameless_lambda_runs_its_code_when_trusted(tmp_path):
    marker = tmp_path / "ran"
    path = _nameless_lambda_file(tmp_path, marker)
    models.load_model(path, trust_code=True)
    assert marker.exists()  # the planted file is real: its code runs on load


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_lambda_without_a_name_is_refused_by_train_and_predict(command, image_folder,
                                                                 tmp_path):
    marker = tmp_path / "ran"
    path = _nameless_lambda_file(tmp_path, marker)
    image = next((image_folder / "test").rglob("*.png"))
    args = {"train": ["train", "--model", path, "--epochs", "0", "--data", image_folder],
            "predict": ["predict", "--model", path, image]}[command]
    result = CliRunner().invoke(app, [*map(str, args), "--artifacts", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "is a Lambda layer, Python code stored in the model file" in result.output
    assert not marker.exists()


def _nested(marker):
    layers = keras().layers
    inner = keras().Sequential([layers.Lambda(_writes(marker)), layers.ReLU()], name="inner")
    return lambda x: inner(x)


def _wrapped(marker):
    layers = keras().layers

    def body(x):
        x = layers.Reshape((32, 32 * 3))(x)
        x = layers.TimeDistributed(layers.Lambda(_writes(marker)), name="each_row")(x)
        return layers.Reshape((32, 32, 3))(x)

    return body


@pytest.mark.parametrize("body", [_nested, _wrapped], ids=["sequential", "time-distributed"])
def test_a_lambda_nested_or_wrapped_is_refused(body, tmp_path):
    marker = tmp_path / "ran"
    path = _save_h5(_classifier(body(marker)), tmp_path / "nested.h5", marker,
                    _nameless_lambda)
    with pytest.raises(EdgefireError, match="Lambda layer"):
        models.load_model(path)
    assert not marker.exists()


def _op_model(tmp_path, function):
    """A classifier whose TFOpLambda (`x * 1`) is edited to call `function`."""
    marker = tmp_path / "ran"

    def edit(config):
        for cls, _, entry in stored_code.stored_entries(config):
            if cls == "TFOpLambda":
                entry["config"]["function"] = function

    tf = tensorflow()
    return _save_h5(_classifier(lambda x: tf.math.multiply(x, 1.0)), tmp_path / "op.h5",
                    marker, edit)


@pytest.mark.parametrize("function", ["io.write_file", "io.read_file", "print",
                                      "py_function", "io.matching_files"])
def test_a_tfoplambda_naming_io_is_refused_with_the_function(function, tmp_path):
    path = _op_model(tmp_path, function)
    with pytest.raises(EdgefireError, match=f"TensorFlow function '{function}'"):
        models.load_model(path)


def test_every_admitted_function_is_a_tensorflow_function():
    from tf_keras.src.layers.core.tf_op_layer import TFOpLambda

    for name in stored_code.PURE_FUNCTIONS:
        layer = TFOpLambda.from_config({"name": name, "function": name})
        assert callable(layer.function), name


class _WritesWhenRestored:
    """A resource whose initializer, traced into the SavedModel's graph, writes a file."""

    @staticmethod
    def make(marker):
        tf = tensorflow()

        class Resource(tf.saved_model.experimental.TrackableResource):
            def _create_resource(self):
                return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

            def _initialize(self):
                tf.io.write_file(str(marker), "ran")
                return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

        return Resource()


def _planted_savedmodel(tmp_path, keras_metadata: bool):
    marker = tmp_path / "ran"
    folder = tmp_path / "model"
    tf = tensorflow()
    if keras_metadata:
        model = _classifier(lambda x: x)
        model.planted = _WritesWhenRestored.make(marker)
        model.save(folder)
    else:
        module = tf.Module()
        module.planted = _WritesWhenRestored.make(marker)
        module.scores = tf.function(lambda x: x, input_signature=[tf.TensorSpec([None, 3])])
        tf.saved_model.save(module, str(folder))
    marker.unlink(missing_ok=True)
    return folder, marker


@pytest.mark.parametrize("keras_metadata", [True, False], ids=["keras", "plain"])
def test_a_savedmodel_that_writes_when_restored_is_refused_before_loading(keras_metadata,
                                                                          image_folder,
                                                                          tmp_path):
    folder, marker = _planted_savedmodel(tmp_path, keras_metadata)
    result = CliRunner().invoke(app, ["train", "--model", str(folder), "--epochs", "0",
                                      "--data", str(image_folder), "--artifacts",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    needle = "holds op 'WriteFile'" if keras_metadata else "without Keras metadata"
    assert needle in result.output
    assert not marker.exists()
    tensorflow().saved_model.load(str(folder))  # the positive control: restoring writes
    assert marker.exists()


def test_a_savedmodel_calling_its_checkpoint_functions_is_refused(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    folder, _ = _planted_savedmodel(tmp_path, keras_metadata=False)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    saver = next(f.signature.name for f in graph.library.function
                 if f.signature.name.startswith("__inference__traced_save_"))
    caller = next(f for f in graph.library.function if f.node_def)
    caller.node_def[0].attr["f"].func.name = saver  # a computing function calls the saver
    (folder / "saved_model.pb").write_bytes(saved.SerializeToString())
    (folder / "keras_metadata.pb").write_bytes(b"")
    with pytest.raises(EdgefireError, match="calls its checkpoint functions|holds op"):
        stored_code.refuse_unsafe_graph(folder)


def test_a_keras_application_is_admitted_in_every_format(tmp_path):
    """MobileNetV3 (hard-swish as TFOpLambda-free layers, squeeze-and-excitation, Rescaling,
    dropout's random ops in the SavedModel graph): admitted as .h5, .keras and SavedModel."""
    model = keras().applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                  classes=10, minimalistic=False)
    for name in ("m.h5", "m.keras", "saved"):
        model.save(tmp_path / name)
        stored_code.refuse_stored_code(tmp_path / name)  # no error
    assert models.load_model(tmp_path / "m.h5").count_params() == model.count_params()


# Mutations of a stored config, as a hostile or broken file would hold it
CLASS_NAMES = st.sampled_from(["Lambda", "Conv2D", "NoSuchLayer", "TFOpLambda", "Functional",
                               "__lambda__", "os.system", "", "Sequential", "Dense"])
FUNCTIONS = st.sampled_from(["math.multiply", "io.write_file", "nn.relu6", "print",
                             "io.gfile.makedirs", "concat", "py_function"])


@st.composite
def mutations(draw):
    return draw(st.lists(st.tuples(st.sampled_from(["drop name", "rename class",
                                                    "set function", "nest"]),
                                   st.integers(0, 10), CLASS_NAMES, FUNCTIONS),
                         min_size=1, max_size=4))


def _mutate(config, steps):
    entries = lambda: [e for _, _, e in stored_code.stored_entries(config)]  # noqa: E731
    for action, index, class_name, function in steps:
        entry = entries()[index % len(entries())]
        if action == "drop name":
            entry.pop("name", None)
            if isinstance(entry.get("config"), dict):
                entry["config"].pop("name", None)
        elif action == "rename class":
            entry["class_name"] = class_name
        elif action == "set function" and isinstance(entry.get("config"), dict):
            entry["class_name"] = "TFOpLambda"
            entry["config"]["function"] = function
        elif action == "nest":
            entry["config"] = {"name": "nested", "layers": [json.loads(json.dumps(entry))]}
            entry["class_name"] = "Sequential"


@pytest.fixture(scope="module")
def planted_h5(tmp_path_factory):
    """A classifier with a Lambda writing a marker, a TFOpLambda, and a nested model."""
    folder = tmp_path_factory.mktemp("planted")
    marker = folder / "ran"
    layers = keras().layers
    tf = tensorflow()
    inner = keras().Sequential([layers.Conv2D(4, 3), layers.ReLU()], name="inner")

    def body(x):
        x = layers.Lambda(_writes(marker), name="evil")(tf.math.multiply(x, 1.0))
        return inner(x)

    return _save_h5(_classifier(body), folder / "planted.h5", marker), marker


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=mutations())
def test_a_mutated_config_loads_known_layers_or_is_one_line_never_code(steps, planted_h5,
                                                                       tmp_path):
    source, marker = planted_h5
    path = tmp_path / "mutated.h5"
    shutil.copy(source, path)
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        _mutate(config, steps)
        h5.attrs["model_config"] = json.dumps(config)
    try:
        model = models.load_model(path)
    except EdgefireError as exc:
        assert "\n" not in str(exc)
    else:
        kinds = {type(layer).__name__ for layer in model.submodules}
        assert not kinds & {"Lambda"}, kinds
    assert not marker.exists()


def test_an_op_layer_whose_function_is_bytecode_is_one_line(tmp_path):
    """Found by the fuzzing test above: a TFOpLambda renamed from a Lambda keeps the Lambda's
    serialized bytecode (a list) as its function, which is no name at all."""
    from edgefire.models import stored_code

    entry = {"class_name": "TFOpLambda", "config": {"name": "evil", "function": ["4wIAAAAA", None]}}
    with pytest.raises(EdgefireError, match="calls the TensorFlow function .*4wIAAAAA.* not run"):
        stored_code.judge(tmp_path / "m.h5", "TFOpLambda", "evil", entry)

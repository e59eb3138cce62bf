"""The code examples of the docs run against the code as it is."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_extendings_float16_example_makes_a_float16_tflite_that_runs(built, copy_of):
    from edgefire import runtimes
    from edgefire.config import ExportConfig
    from edgefire.stages import export

    block = re.search(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), re.S)[1]
    namespace = dict(vars(export))
    exec(block, namespace)  # the example as written, in export's namespace
    row = namespace["DEPLOYABLES"][-1]
    assert (row.file_format, row.precision) == ("tflite", "float16")
    folder = copy_of(built)
    sources = export.Sources(folder, ExportConfig(), None)
    assert row.wanted(sources.quantized)  # an int8 build wants the float16 file too
    path = folder / "extra_float16.tflite"
    path.write_bytes(row.make(sources))
    runner = runtimes.open_model(path, contract=sources.contract)
    scores = runner.run(np.zeros((2, *sources.contract.shape), dtype=np.uint8))
    assert scores.shape == (2, len(sources.trained.classes))
    from edgefire.runtimes import litert

    dtypes = {t["dtype"] for t in litert.interpreter(path, 1).get_tensor_details()}
    assert np.float16 in dtypes  # float16 weights, dequantized at load

"""The teacher of knowledge distillation in training (`train --teacher`): a Keras model file,
or a finished build's folder (its float reference), frozen, scoring the same normalized
images as the student.

A build folder's teacher is checked against the student: the same input contract and the
same classes. A file carries no contract: it must take the student's input (`--mean`/`--std`
of a given model, pixel / 255 otherwise).
"""

from __future__ import annotations

from pathlib import Path

from edgefire import artifacts, models, records
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError


def source(path: str) -> Path:
    """The teacher's model file: the file itself, or a build folder's float reference."""
    root = Path(path)
    if not root.exists():
        raise EdgefireError(f"--teacher {path}: not found")
    if root.is_dir() and (root / artifacts.MANIFEST).exists():
        return artifacts.source_model(root)
    return root


def load(path: str, contract: InputContract, classes: tuple[str, ...]):
    """The frozen teacher, checked to score the student's classes from the student's input."""
    root, model_path = Path(path), source(path)
    if root.is_dir() and (root / artifacts.MANIFEST).exists():
        trained = records.train(root)
        if trained.contract != contract:
            raise EdgefireError(f"--teacher {path}: its input contract "
                                f"{trained.contract.to_json()} is not the student's "
                                f"{contract.to_json()}")
        if trained.classes != tuple(classes):
            raise EdgefireError(f"--teacher {path}: it scores classes {list(trained.classes)}, "
                                f"the data has {list(classes)}")
    teacher = models.load_model(model_path)
    want = ((contract.size, contract.size, 3), len(classes))
    have = (tuple(teacher.input_shape[1:]), teacher.output_shape[-1])
    if have != want:
        raise EdgefireError(f"--teacher {path}: takes {have[0]} with {have[1]} scores, the "
                            f"student {want[0]} with {want[1]}")
    teacher.trainable = False
    return teacher

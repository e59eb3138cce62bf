"""The `make bench-*` benchmarks: each writes its rows to a results file (JSON and markdown)."""

from __future__ import annotations

import argparse
from pathlib import Path


def arguments(doc: str, name: str) -> argparse.ArgumentParser:
    """The options a benchmark that builds on CIFAR-10 takes: the data, a work folder for its
    builds (`.bench-NAME`) and its results file (`artifacts/bench-NAME.json`)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cifar10-jpeg"))
    parser.add_argument("--work", type=Path, default=Path(f".bench-{name}"))
    parser.add_argument("--out", type=Path, default=Path(f"artifacts/bench-{name}.json"))
    return parser


def percents(row: dict, keys: tuple[str, ...]) -> list[str]:
    """The row's fractions as percentages, '-' where missing."""
    return [f"{row[k]:.2%}" if row.get(k) is not None else "-" for k in keys]


def finish(out: Path, rows: list[dict], table) -> int:
    """Write the results; 0 unless a build crashed (exit 1 is a missed gate: a result)."""
    from edgefire import artifacts

    artifacts.write_results(out, rows, table(rows))
    return 0 if all(r["exit_code"] in (0, 1) for r in rows) else 1

"""`make bench-data`: how fast an image folder decodes, and the memory of a 64x64 data stage.

    python -m edgefire.bench.decode --data PATH [--size 64] [--out FILE]

Decoding is timed with an empty cache (every image read, made upright, converted and resized
by the input contract, in parallel). The peak memory is the resident set of a fresh process
that loads the source at --size (decoded from scratch) and makes the build's splits, next to
the bytes the decoded arrays alone take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgefire import data


def decode_rate(source: str, size: int) -> dict:
    """Images per second decoding the whole source at size x size, cache bypassed."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDGEFIRE_CACHE"] = cache
        start = time.perf_counter()
        dataset = data.load(source, size)
        seconds = time.perf_counter() - start
    images = len(dataset.y_train) + len(dataset.y_test)
    return {"size": size, "images": images, "seconds": round(seconds, 1),
            "images_per_second": round(images / seconds, 1)}


def data_stage_memory(source: str, size: int) -> dict:
    """Peak resident memory of a process that decodes the source at size and splits it."""
    code = ("import sys; from edgefire import data; "
            "d = data.load(sys.argv[1], int(sys.argv[2])); data.split(d, 5000, 0)")
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run([sys.executable, "-c", code, source, str(size)], check=True,
                       env={**os.environ, "EDGEFIRE_CACHE": cache})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"size": size, "peak_rss_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-data.json"))
    args = parser.parse_args()
    decode = decode_rate(args.data, 32)
    memory = data_stage_memory(args.data, args.size)
    memory["decoded_arrays_bytes"] = decode["images"] * args.size * args.size * 3
    result = {"data": args.data, "decode": decode, "memory": memory,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""edgefire: a tiny image classifier, trained, pruned, int8-quantized, exported and verified.

The Python API (`edgefire.build`, `edgefire.verify`) is documented in `edgefire/api.py`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgefire")  # pyproject.toml's, the one place it is spelled
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def build(*args, **kwargs) -> dict:
    """Run a build and return its report; see `edgefire.api.build`."""
    from edgefire import api

    return api.build(*args, **kwargs)


def verify(*args, **kwargs) -> dict:
    """Verify an artifacts folder and return its report; see `edgefire.api.verify`."""
    from edgefire import api

    return api.verify(*args, **kwargs)

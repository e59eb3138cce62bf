"""edgefire: a tiny image classifier, trained, pruned, int8-quantized, exported and verified.

The Python API (`edgefire.build`, `edgefire.verify`) is documented in `edgefire/api.py`.
"""

from edgefire.version import VERSION as __version__  # noqa: F401 (the package's version)


def build(*args, **kwargs) -> dict:
    """Run a build and return its report; see `edgefire.api.build`."""
    from edgefire import api

    return api.build(*args, **kwargs)


def verify(*args, **kwargs) -> dict:
    """Verify an artifacts folder and return its report; see `edgefire.api.verify`."""
    from edgefire import api

    return api.verify(*args, **kwargs)

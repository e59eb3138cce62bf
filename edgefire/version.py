"""edgefire's version: the installed package's (pyproject.toml, the one place it is spelled)."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("edgefire")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"

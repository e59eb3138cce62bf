"""The error types for expected failures; the CLI turns each into one line and its exit code.

Exit codes: 0 passed, 1 a gate failed (nothing else), 2 bad input or usage, 3 a tool (the
TFLite converter, tf2onnx, a runtime) failed on valid input, 70 an internal error (a bug:
traceback shown), 130 interrupted, 143 terminated.
"""

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TOOL_FAILED = 3
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: distinct from 1, which Python gives any crash
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what shells report for a terminated process


class EdgefireError(Exception):
    """An expected failure (bad input, bad usage, an unwritable folder): one readable line."""

    exit_code = EXIT_BAD_INPUT


class GateFailed(EdgefireError):
    """A verification gate (size, accuracy drop, minimum accuracy) was missed."""

    exit_code = EXIT_GATE_FAILED


class ToolFailed(EdgefireError):
    """A converter or runtime failed on input edgefire accepted: one line naming the tool."""

    exit_code = EXIT_TOOL_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C."""


def first_line(exc: Exception) -> str:
    """The first line of an error that says something: OpenVINO prefixes its own with lines
    naming where in its sources it was raised ("Exception from src/...", "Check '...'")."""
    text = [line.strip() for line in str(exc).splitlines() if line.strip()
            and not line.startswith(("Exception from ", "Check '"))]
    return text[0][:200] if text else type(exc).__name__


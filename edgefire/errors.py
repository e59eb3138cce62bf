"""The one error type for expected failures; the CLI turns it into one line and an exit code."""

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what shells report for a terminated process


class EdgefireError(Exception):
    """An expected failure (bad input, bad usage, an unwritable folder): one readable line."""

    exit_code = EXIT_BAD_INPUT


class GateFailed(EdgefireError):
    """A verification gate (size, accuracy drop, minimum accuracy) was missed."""

    exit_code = EXIT_GATE_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C."""

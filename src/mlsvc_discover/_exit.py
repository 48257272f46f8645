"""Exit codes of the ``mlsvc-discover`` command, in one place (README "Exit codes" documents them).

A leaf module: the CLI, the long-running agent and the report all name their codes from here.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CANNOT_SERVE",
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TERMINATED",
    "exit_by_signal",
]

EXIT_OK = 0
"""Done: everything discovered and applied (or, long-running, stopped cleanly)."""
EXIT_PARTIAL = 1
"""Partial failure: a discoverer, a probe or some writes failed; the rest was applied."""
EXIT_CANNOT_SERVE = 1
"""Long-running only: the health endpoint's address cannot be bound."""
EXIT_CONFIG = 2
"""Bad config or usage; nothing was contacted."""
EXIT_LOCKED = 3
"""Another agent holds the lock of ``state.path``; nothing was contacted."""
EXIT_INTERRUPTED = 130
"""``--once`` interrupted by Ctrl-C (SIGINT): 128 + 2."""
EXIT_TERMINATED = 143
"""``--once`` stopped by SIGTERM: 128 + 15."""


def exit_by_signal(signum: int) -> int:
    """The code of ``--once`` stopped by signal ``signum``: :data:`EXIT_INTERRUPTED` for SIGINT,
    :data:`EXIT_TERMINATED` for SIGTERM (the shell's 128 + signal number for any other)."""
    return {2: EXIT_INTERRUPTED, 15: EXIT_TERMINATED}.get(int(signum), 128 + int(signum))

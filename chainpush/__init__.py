"""chainpush: watch smart contracts and push their events to browsers, with nothing lost."""

from __future__ import annotations

import sys

#: py_ecc (pulled in by web3 → eth-account) raises the interpreter's recursion limit to 100,000
#: when it is imported. The C stack overflows long before that, so deep recursion (a frame of
#: 100k "[" handed to json.loads, a deep repr) kills the process with SIGSEGV instead of raising
#: RecursionError. We import it first and restore a limit that fails safely.
SAFE_RECURSION_LIMIT = 4000


def bound_recursion() -> None:
    """Import py_ecc now (if present) and put the recursion limit back to a safe value."""
    try:
        import py_ecc  # noqa: F401
    except ImportError:  # pragma: no cover - web3 always brings it
        pass
    sys.setrecursionlimit(SAFE_RECURSION_LIMIT)


bound_recursion()

"""push package of chainpush (see chainpush/__init__.py for the recursion-limit guard)."""

import chainpush  # noqa: F401  (restores a safe recursion limit before web3 is imported)

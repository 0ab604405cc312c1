"""Factory-created contracts: templates and the set of children discovered so far. Pure.

A *template* (``[[contracts]] factory = {contract, event, arg}``) is watched at every address
that argument ``arg`` of the factory's ``event`` records carries, from the block of that record
on (``docs/watcher.md`` §Factory-created contracts). ``Children`` is what the watcher knows of
them at its committed tip:

* children of final blocks (at or below the cursor's anchor): a compact set per template;
* children of blocks still in the reorg window: with the block's number and hash, so that a
  reorg orphaning the block un-discovers them (``orphan``).

It round-trips through the checkpoint (``to_doc`` / ``from_doc``) with the records of the same
step, so after a crash the child set and the stored records agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chainpush.watcher.decode import ContractSpec
from chainpush.watcher.record import EventRecord, Record

#: most child addresses put into an ``eth_getLogs`` ``address`` filter; beyond, the children's
#: logs are fetched by topic0 alone and filtered here (providers limit the array's size)
MAX_FILTER_ADDRESSES = 500


@dataclass(frozen=True, slots=True)
class Template:
    """One factory template: ``spec`` (its address unused) decodes every child."""

    spec: ContractSpec
    factory: str  # the [[contracts]] name of the factory
    event: str
    arg: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Child:
    template: str
    address: str  # checksummed
    number: int  # creation block
    hash: str  # creation block hash ("" once final)


def discovered(templates: Sequence[Template], records: Iterable[Record]) -> list[Child]:
    """The children announced by the factory ``records`` (in their order)."""
    out: list[Child] = []
    by_factory: dict[tuple[str, str], list[Template]] = {}
    for t in templates:
        by_factory.setdefault((t.factory, t.event), []).append(t)
    for rec in records:
        if not isinstance(rec, EventRecord):
            continue
        for t in by_factory.get((rec.contract, rec.event), ()):
            value = rec.args.get(t.arg)
            if isinstance(value, str):
                out.append(Child(t.name, value, rec.block_number, rec.block_hash))
    return out


class Children:
    """The children known at the committed tip (see the module docstring)."""

    def __init__(self) -> None:
        self._final: dict[str, str] = {}  # lower-case address -> template
        self._window: dict[str, Child] = {}  # lower-case address -> child of a window block
        self._checksummed: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._final) + len(self._window)

    def template_of(self, address: str) -> str | None:
        a = address.lower()
        if a in self._final:
            return self._final[a]
        child = self._window.get(a)
        return child.template if child is not None else None

    def created_at(self, address: str) -> int:
        """The creation block of a known child (0 for a final one: any block is after it)."""
        child = self._window.get(address.lower())
        return child.number if child is not None else 0

    def addresses(self) -> list[str]:
        """Every known child, checksummed, in a stable order."""
        return sorted(self._checksummed[a] for a in (*self._final, *self._window))

    def add(self, child: Child) -> bool:
        """Record ``child``; False if its address is known already (a repeated announcement
        keeps the first creation block)."""
        a = child.address.lower()
        if a in self._final or a in self._window:
            return False
        self._window[a] = child
        self._checksummed[a] = child.address
        return True

    def orphan(self, block_hashes: Iterable[str]) -> list[Child]:
        """Un-discover the children created in the blocks ``block_hashes`` (orphaned)."""
        gone = set(block_hashes)
        out = [c for c in self._window.values() if c.hash in gone]
        for c in out:
            a = c.address.lower()
            del self._window[a]
            del self._checksummed[a]
        return out

    def finalize(self, upto: int) -> None:
        """Children of blocks at or below ``upto`` are final (compacted)."""
        for a in [a for a, c in self._window.items() if c.number <= upto]:
            self._final[a] = self._window.pop(a).template

    def to_doc(self) -> dict[str, Any]:
        final: dict[str, list[str]] = {}
        for a, template in sorted(self._final.items()):
            final.setdefault(template, []).append(self._checksummed[a])
        return {"final": final,
                "window": [[c.template, c.address, c.number, c.hash]
                           for c in sorted(self._window.values(),
                                           key=lambda c: (c.number, c.address))]}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None, templates: Iterable[str]) -> Children:
        """Restore; children of templates no longer configured are dropped."""
        out = cls()
        keep = set(templates)
        if not doc:
            return out
        for template, addresses in dict(doc.get("final") or {}).items():
            if template not in keep:
                continue
            for address in addresses:
                out._final[str(address).lower()] = template
                out._checksummed[str(address).lower()] = str(address)
        for template, address, number, block_hash in doc.get("window") or []:
            if template in keep:
                out.add(Child(str(template), str(address), int(number), str(block_hash)))
        return out

    def drop(self, templates: Iterable[str]) -> None:
        """Forget the children of ``templates`` (to discover them again: a catch-up)."""
        gone = set(templates)
        for a in [a for a, t in self._final.items() if t in gone]:
            del self._final[a]
            del self._checksummed[a]
        for a in [a for a, c in self._window.items() if c.template in gone]:
            del self._window[a]
            del self._checksummed[a]

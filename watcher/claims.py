"""Contract names are unique per deployment: each watcher claims its names in ``contracts``.

Topics are not qualified by chain (``docs/seams.md`` §3): ``contract:<Name>`` carries one
chain's contract. A deployment that watches several chains (one watcher per chain, each with
its lease) therefore needs every ``[[contracts]]`` name to belong to one chain, checked across
processes: at startup, once it knows its node's chain id, each watcher (leader or standby)
claims its names, one document per name::

    {_id: <name>, chain_id, watch: "<chain id>:<watch name>", addresses: [...], source,
     claimed_at}

A claim by the same chain is idempotent (rewritten: ``watch``, ``addresses`` and ``source``
say who claimed it last); a name held by another chain is refused with a ``ConfigError`` that
names the name, both chains, both watchers and the fix. The watcher then drops the claims its
own key holds for names no longer in its config.

:func:`conflict` holds the decision (pure); :class:`MongoClaims` performs it (one insert per
name, a read and a conditional update when the name exists: two chains claiming one name at
the same instant cannot both win, the unique ``_id`` decides).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from chainpush.constants import CONTRACTS
from chainpush.watcher.checkpoint import CheckpointError
from chainpush.watcher.errors import ConfigError

if TYPE_CHECKING:  # the push nodes read names without the watcher's ABI machinery
    from chainpush.watcher.binding import Bound
    from chainpush.watcher.config import Config

logger = logging.getLogger(__name__)

__all__ = ["Claim", "MongoClaims", "claim_names", "claims_of", "conflict"]

#: insert / read / update rounds for one name before giving up (each lost round means another
#: process released or re-claimed the name in between: never expected more than once)
CLAIM_TRIES = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """One watcher's claim of one contract name."""

    name: str
    chain_id: int
    #: the watcher's checkpoint / lease key, ``<chain id>:<[watch] name>``
    watch: str
    #: the addresses it watches under that name (none for a factory template)
    addresses: tuple[str, ...] = ()
    #: the config file, for the error a later clash shows
    source: str = ""
    #: the ``[[contracts]] abi`` (for the fix the error suggests: a new name, the same ABI)
    abi: str = ""

    def doc(self, now: float) -> dict[str, Any]:
        return {"_id": self.name, "chain_id": self.chain_id, "watch": self.watch,
                "addresses": list(self.addresses), "source": self.source,
                "claimed_at": now}


def conflict(claim: Claim, held: Mapping[str, Any], *, database: str) -> str | None:
    """None when ``held`` (the stored claim of ``claim.name``) is the same chain's; else the
    message of the error that stops the watcher: the name, both chains, both watchers, the fix.
    """
    other = held.get("chain_id")
    if other == claim.chain_id:
        return None
    name = claim.name
    where = ", ".join(str(x) for x in (
        f"watcher {held.get('watch', '?')}", held.get("source") or None,
        *(held.get("addresses") or ())) if x)
    return (f"{claim.source}: [[contracts]] {name}: the name is already used on chain {other} "
            f"({where}) in database {database}.{CONTRACTS}; this watcher ({claim.watch}) is on "
            f"chain {claim.chain_id}. Contract names are unique per deployment (topics "
            f"contract:{name} / state:{name} carry one chain): rename it here (name = "
            f"\"{name}_{claim.chain_id}\", abi = \"{claim.abi or name}\"), or, if chain {other} "
            f"no longer watches it, release the name: chainpush watch --config "
            f"{claim.source or '…'} --release-claim {name}")


class MongoClaims:
    """The ``contracts`` collection. ``async with MongoClaims(uri, db) as claims``.

    MongoDB errors become ``CheckpointError`` (retryable: the watcher's session is retried);
    a name held by another chain is a ``ConfigError`` (fatal)."""

    def __init__(self, mongo_uri: str, database: str, *, timeout_s: float = 5.0) -> None:
        try:
            self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                mongo_uri, serverSelectionTimeoutMS=int(timeout_s * 1000))
        except PyMongoError as exc:  # an unparsable URI, a missing DNS SRV record
            raise CheckpointError(f"[stores] mongo_uri: {exc}") from exc
        self.database = database
        self._coll = self._client[database][CONTRACTS]

    async def __aenter__(self) -> MongoClaims:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    async def claim(self, claims: Sequence[Claim]) -> None:
        """Claim every name (all of one watcher: one chain, one key), then drop the claims of
        that key for names it no longer has. Raises ``ConfigError`` on the first name another
        chain holds (the names before it stay claimed: they are this chain's anyway)."""
        try:
            for claim in claims:
                await self._claim_one(claim)
            keys = {c.watch for c in claims}
            for key in keys:
                names = [c.name for c in claims if c.watch == key]
                gone = await self._coll.delete_many({"watch": key, "_id": {"$nin": names}})
                if gone.deleted_count:
                    logger.info("released %d contract name(s) %s no longer watches",
                                gone.deleted_count, key)
        except PyMongoError as exc:
            raise CheckpointError(f"claiming contract names in {self.database}.{CONTRACTS} "
                                  f"failed: {exc}") from exc

    async def _claim_one(self, claim: Claim) -> None:
        doc = claim.doc(time.time())
        for _ in range(CLAIM_TRIES):
            try:
                await self._coll.insert_one(doc)
                logger.info("claimed contract name %s for chain %d (%s)", claim.name,
                            claim.chain_id, claim.watch)
                return
            except DuplicateKeyError:
                pass
            held = await self._coll.find_one({"_id": claim.name})
            if held is None:
                continue  # released between the insert and the read: insert again
            message = conflict(claim, held, database=self.database)
            if message is not None:
                raise ConfigError(message)
            body = {k: v for k, v in doc.items() if k != "_id"}
            done = await self._coll.update_one({"_id": claim.name, "chain_id": claim.chain_id},
                                               {"$set": body})
            if done.matched_count:
                return
            # released (and perhaps claimed by another chain) since the read: decide again
        raise CheckpointError(f"claiming contract name {claim.name} in {self.database}."
                              f"{CONTRACTS}: it changed under {CLAIM_TRIES} tries in a row")

    async def conflicts(self, claims: Sequence[Claim]) -> list[str]:
        """What :meth:`claim` would refuse, without writing (``--check-config``)."""
        try:
            held = {d["_id"]: d async for d in self._coll.find(
                {"_id": {"$in": [c.name for c in claims]}})}
        except PyMongoError as exc:
            raise CheckpointError(f"reading {self.database}.{CONTRACTS} failed: {exc}") from exc
        found = (conflict(c, held[c.name], database=self.database) for c in claims
                 if c.name in held)
        return [message for message in found if message is not None]

    async def names(self) -> set[str]:
        """Every claimed name (what the push nodes accept for ``contract:``/``state:``)."""
        try:
            return {str(d["_id"]) async for d in self._coll.find({}, {"_id": 1})}
        except PyMongoError as exc:
            raise CheckpointError(f"reading {self.database}.{CONTRACTS} failed: {exc}") from exc

    async def list(self) -> list[dict[str, Any]]:
        """Every claim, by name (``chainpush watch --claims``)."""
        try:
            return [d async for d in self._coll.find({}).sort("_id", 1)]
        except PyMongoError as exc:
            raise CheckpointError(f"reading {self.database}.{CONTRACTS} failed: {exc}") from exc

    async def release(self, name: str) -> bool:
        """Drop the claim of ``name``; False if nothing claimed it."""
        try:
            gone = await self._coll.delete_one({"_id": name})
        except PyMongoError as exc:
            raise CheckpointError(f"releasing {name} in {self.database}.{CONTRACTS} failed: "
                                  f"{exc}") from exc
        return bool(gone.deleted_count)


def claims_of(config: Config, bound: Bound) -> list[Claim]:
    """The claims of ``config``'s watcher on ``bound.chain_id``: every ``[[contracts]]`` name
    (factory templates too), with the addresses it watches under that name."""
    key = f"{bound.chain_id}:{config.watch.name}"
    addresses: dict[str, list[str]] = {}
    for spec in bound.specs:
        addresses.setdefault(spec.name, []).append(spec.address)
    return [Claim(name=c.name, chain_id=bound.chain_id, watch=key,
                  addresses=tuple(addresses.get(c.name, ())), source=config.source,
                  abi=c.abi)
            for c in config.contracts]


async def claim_names(config: Config, bound: Bound) -> None:
    """What the watcher does at startup: claim its names in ``[stores]``'s database."""
    stores = config.stores
    async with MongoClaims(stores.mongo_uri, stores.database) as claims:
        await claims.claim(claims_of(config, bound))

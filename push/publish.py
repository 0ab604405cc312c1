"""App messages: the pure half of ``POST /v1/publish`` (the adapter is :mod:`push.web`).

An application's backend publishes a business message (an order shipped, a chat line) to a topic
``app:<name>`` or to one user's ``inbox:<user id>``; collect stores it like a chain record and the
push nodes deliver it with offsets, history and epochs (docs/seams.md §1 "App records").

This module decides, without I/O:

* whether the ``Authorization: Bearer <key>`` header holds one of the server keys
  (:func:`key_matches`, constant time over every key);
* whether a body is a valid request and, if so, the app record to store (:func:`parse_request`);
  every refusal is a :class:`PublishRefused` with the HTTP status and a JSON error code.

The publisher's ``id`` is the idempotency key: the record id is ``<topic>/<id>``, its message id
``<topic>/<id>/confirmed``, so a retry of the same request (a timeout, a crash of the backend) is
stored once and answered with the offset of the first.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from chainpush.push.errors import PushError
from chainpush.push.records import APP_TOPIC_PREFIXES
from chainpush.push.wire import MAX_DEPTH, nesting_depth, valid_topic

#: a publisher's id: what it retries with. No ``/`` (the record id is ``<topic>/<id>``).
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
MAX_EVENT_CHARS = 100
DEFAULT_EVENT = "message"
#: integers beyond this lose precision in JavaScript (and beyond 2^63 do not fit BSON): the seam
#: sends big integers as decimal strings, and so must a publisher
MAX_SAFE_INT = 2**53
#: the fields of a request body; anything else is refused (a typo must not be dropped silently)
_FIELDS = frozenset({"topic", "id", "event", "data"})


class PublishRefused(PushError, ValueError):
    """A publish request that is refused; ``status`` (HTTP) and ``code`` go in the JSON answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def key_matches(authorization: str | None, keys: Sequence[str]) -> bool:
    """True if ``authorization`` is ``Bearer <one of keys>``.

    Compared with :func:`hmac.compare_digest` against *every* key, so that the time taken says
    nothing about which key, or how much of one, matched."""
    if authorization is None:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    given = presented.strip().encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _check_data(value: object, path: str) -> None:
    """Refuse what the store or a browser cannot hold unchanged (the message names the path)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise PublishRefused(400, "bad_request", f"{path}: integers beyond 2^53 must be sent "
                                 "as decimal strings (as chain records carry uints)")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_data(item, f"{path}.{i}")
        return
    assert isinstance(value, dict)  # json.loads makes nothing else
    for key, item in value.items():
        if key.startswith("$") or "\x00" in key:
            raise PublishRefused(400, "bad_request", f"{path}: object keys must not start with "
                                 f"'$' or hold NUL, got {key[:40]!r}")
        _check_data(item, f"{path}.{key}")


def parse_request(body: bytes, *, now: float) -> dict[str, Any]:
    """The app record for a request body, or :class:`PublishRefused` (400) naming the field.

    Body: ``{"topic": "app:<name>" | "inbox:<user id>", "id": "<1-128 of A-Za-z0-9._:@->",
    "event": "<type name>" (optional), "data": <any JSON> (optional, default {})}``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishRefused(400, "bad_json", "body must be UTF-8 JSON") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise PublishRefused(400, "bad_json", f"body is nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise PublishRefused(400, "bad_json", f"body is not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise PublishRefused(400, "bad_request", "body must be a JSON object with topic, id, "
                             "event, data")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise PublishRefused(400, "bad_request", f"unknown field(s) {', '.join(unknown)[:80]}: "
                             "the fields are topic, id, event, data")
    topic = obj.get("topic")
    if not isinstance(topic, str) or not topic.startswith(APP_TOPIC_PREFIXES) or not (
            valid_topic(topic)):
        raise PublishRefused(400, "bad_topic", "topic must be app:<name> (printable, at most 200 "
                             "characters) or inbox:<user id> (a token's sub), got "
                             f"{str(topic)[:60]!r}")
    client_id = obj.get("id")
    if not isinstance(client_id, str) or _ID.fullmatch(client_id) is None:
        raise PublishRefused(400, "bad_request", "id must be 1-128 characters of letters, digits "
                             f"and . _ : @ - (the key a retry is recognised by), got "
                             f"{str(client_id)[:60]!r}")
    event = obj.get("event", DEFAULT_EVENT)
    if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_CHARS or not (
            event.isprintable()):
        raise PublishRefused(400, "bad_request", f"event must be a printable string of 1-"
                             f"{MAX_EVENT_CHARS} characters, got {str(event)[:60]!r}")
    data = obj.get("data", {})
    _check_data(data, "data")
    return app_record(topic=topic, client_id=client_id, event=event, data=data, now=now)


def app_record(*, topic: str, client_id: str, event: str, data: object,
               now: float) -> dict[str, Any]:
    """The record of docs/seams.md §1 (``kind: "app"``) for a checked request."""
    return {"kind": "app", "id": f"{topic}/{client_id}", "topic": topic, "event": event,
            "data": data, "published_at": int(now), "status": "confirmed", "address_paths": []}


def answer(record: Mapping[str, Any], *, msg_id: str, offset: int, epoch: str | None,
           duplicate: bool) -> dict[str, Any]:
    """The JSON answer to an accepted request: where the message is in its stream."""
    return {"topic": record["topic"], "id": str(record["id"]).rpartition("/")[2],
            "msg_id": msg_id, "offset": offset, "epoch": epoch, "duplicate": duplicate}

"""The pure webhook core: ordering, backoff bounds, pause rules, ids, bodies, signatures, and a
seeded simulation of a lane against a flaky endpoint (fake clock, seeded randomness)."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from chainpush.push.records import StoredMessage
from chainpush.push.webhook_config import WebhookConfig
from chainpush.push.webhooks import (
    Acked,
    Failure,
    Fetch,
    HookState,
    Idle,
    Lane,
    Paused,
    Response,
    Retry,
    Send,
    Stale,
    Wait,
    body_of,
    classify,
    retry_after_s,
    signed_headers,
    webhook_id,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
TOPIC = "contract:DemoToken"


def hook(**kw: Any) -> WebhookConfig:
    base: dict[str, Any] = {"name": "backend", "url": "http://127.0.0.1:1/h", "secret": SECRET,
                            "topics": (TOPIC,)}
    base.update(kw)
    return WebhookConfig(**base)


def msg(offset: int, topic: str = TOPIC) -> StoredMessage:
    return StoredMessage(topic=topic, offset=offset, msg_id=f"31337:0x{offset:x}:0/pending",
                         record={"id": f"31337:0x{offset:x}:0", "n": offset})


def store(n: int) -> list[StoredMessage]:
    return [msg(i) for i in range(1, n + 1)]


def lane(cfg: WebhookConfig | None = None, seed: int = 0, **kw: Any) -> Lane:
    return Lane(config=cfg or hook(), hook=HookState("backend"), topic=TOPIC,
                rng=random.Random(seed), **kw)


def read(rows: list[StoredMessage], action: Fetch) -> list[StoredMessage]:
    return [m for m in rows if action.first <= m.offset <= action.last]


def test_idle_until_a_head_then_fetch_one_message() -> None:
    ln = lane()
    assert ln.poll(0.0) == Idle()
    ln.observe_head(3)
    assert ln.poll(0.0) == Fetch(1, 1)
    attempt = ln.fetched(store(3)[:1], 0.0)
    assert attempt is not None and attempt.webhook_id == f"{TOPIC}:1" and not attempt.pin
    assert ln.poll(0.0) == Send(attempt)
    assert ln.result(Response(204), 0.0) == Acked(cursor=1, count=1)
    assert ln.poll(0.0) == Fetch(2, 2)


def test_next_delivery_waits_for_the_previous_acknowledgement() -> None:
    ln = lane()
    ln.observe_head(5)
    first = ln.fetched(store(5)[:1], 0.0)
    ln.observe_head(9)  # more arrived: still the same attempt, nothing new is fetched
    assert ln.poll(0.0) == Send(first)  # type: ignore[arg-type]
    decision = ln.result(Failure("timeout"), 0.0)
    assert isinstance(decision, Retry)
    assert isinstance(ln.poll(0.0), Wait)
    assert ln.poll(decision.until) == Send(first)  # type: ignore[arg-type]


def test_retries_resend_the_same_id_and_body() -> None:
    ln = lane()
    ln.observe_head(1)
    attempt = ln.fetched(store(1), 0.0)
    assert attempt is not None
    seen = []
    now = 0.0
    for _ in range(5):
        action = ln.poll(now)
        if isinstance(action, Wait):
            now = action.until
            action = ln.poll(now)
        assert isinstance(action, Send)
        seen.append((action.attempt.webhook_id, action.attempt.body))
        ln.result(Response(503), now)
    assert len(set(seen)) == 1


def test_backoff_is_jittered_exponential_and_capped() -> None:
    cfg = hook(first_backoff_s=0.5, max_backoff_s=4.0, max_failures=1000)
    for seed in range(20):
        ln = lane(cfg, seed=seed)
        ln.observe_head(1)
        ln.fetched(store(1), 0.0)
        delays = []
        for failure in range(1, 12):
            decision = ln.result(Response(500), 0.0)
            assert isinstance(decision, Retry) and decision.failures == failure
            cap = min(4.0, 0.5 * 2 ** (failure - 1))
            assert cap / 2 <= decision.until <= cap
            delays.append(decision.until)
        assert max(delays) <= 4.0
    # jitter: two seeds do not agree
    a, b = lane(cfg, seed=1), lane(cfg, seed=2)
    for ln in (a, b):
        ln.observe_head(1)
        ln.fetched(store(1), 0.0)
    assert a.result(Failure("x"), 0.0) != b.result(Failure("x"), 0.0)


def test_410_pauses_at_once_and_nothing_is_skipped() -> None:
    ln = lane()
    ln.observe_head(2)
    ln.fetched(store(2)[:1], 0.0)
    decision = ln.result(Response(410), 0.0)
    assert isinstance(decision, Paused)
    assert "410" in decision.reason and "backend" in decision.reason
    assert ln.hook.paused is not None and ln.cursor == 0
    assert ln.poll(100.0) == Idle()


def test_repeated_4xx_pause_but_interleaved_5xx_reset_the_count() -> None:
    ln = lane(hook(max_client_errors=3))
    ln.observe_head(1)
    ln.fetched(store(1), 0.0)
    for status in (400, 422, 500, 401, 403):
        assert isinstance(ln.result(Response(status), 0.0), Retry), status
    decision = ln.result(Response(404), 0.0)
    assert isinstance(decision, Paused) and "3 client errors" in decision.reason
    assert ln.cursor == 0


@pytest.mark.parametrize("status", [408, 425, 429])
def test_later_4xx_are_retried_like_5xx(status: int) -> None:
    assert classify(status) == "retry"
    ln = lane(hook(max_client_errors=1))
    ln.observe_head(1)
    ln.fetched(store(1), 0.0)
    assert isinstance(ln.result(Response(status), 0.0), Retry)


def test_max_failures_pauses_the_whole_webhook() -> None:
    cfg = hook(max_failures=4, topics=("contract:*",))
    state = HookState("backend")
    a = Lane(config=cfg, hook=state, topic="contract:A")
    b = Lane(config=cfg, hook=state, topic="contract:B", cursor=0)
    a.observe_head(1)
    b.observe_head(1)
    a.fetched([msg(1, "contract:A")], 0.0)
    decisions = [a.result(Failure("connection refused"), 0.0) for _ in range(4)]
    assert all(isinstance(d, Retry) for d in decisions[:3])
    assert isinstance(decisions[3], Paused) and "4 failures" in decisions[3].reason
    assert b.poll(0.0) == Idle()  # the other topic stops too


def test_classify() -> None:
    assert [classify(s) for s in (200, 201, 204, 299)] == ["ok"] * 4
    assert classify(410) == "gone"
    assert [classify(s) for s in (400, 401, 404, 413)] == ["client"] * 4
    assert [classify(s) for s in (301, 302, 500, 502, 503, 199)] == ["retry"] * 6


def test_batches_are_in_offset_order_and_pinned() -> None:
    ln = lane(hook(batch_size=3))
    ln.observe_head(7)
    assert ln.poll(0.0) == Fetch(1, 3)
    attempt = ln.fetched(store(7)[:3], 0.0)
    assert attempt is not None and attempt.pin and attempt.webhook_id == f"{TOPIC}:1-3"
    body = json.loads(attempt.body)
    assert body["type"] == "batch" and [m["offset"] for m in body["messages"]] == [1, 2, 3]
    assert all(m["type"] == "message" for m in body["messages"])
    ln.result(Response(200), 0.0)
    assert ln.poll(0.0) == Fetch(4, 6)
    ln.fetched(store(7)[3:6], 0.0)
    ln.result(Response(200), 0.0)
    assert ln.poll(0.0) == Fetch(7, 7)


def test_a_pinned_range_survives_a_restart_with_more_messages() -> None:
    # the first process pinned 1-2 and died before the ack; 5 messages exist now
    ln = lane(hook(batch_size=10), pinned=(1, 2))
    ln.observe_head(5)
    action = ln.poll(0.0)
    assert action == Fetch(1, 2)
    assert isinstance(action, Fetch)
    attempt = ln.fetched(read(store(5), action), 0.0)
    assert attempt is not None and attempt.webhook_id == f"{TOPIC}:1-2" and not attempt.pin
    # a pin that no longer starts after the cursor (replay moved it) is dropped
    assert lane(pinned=(3, 4), cursor=0).pinned is None


def test_fetch_never_sends_past_a_gap_or_an_empty_read() -> None:
    ln = lane(hook(batch_size=5))
    ln.observe_head(5)
    attempt = ln.fetched([msg(1), msg(2), msg(4)], 0.0)
    assert attempt is not None and (attempt.first, attempt.last) == (1, 2)
    ln.result(Response(200), 0.0)
    assert ln.fetched([], 1.0) is None
    assert isinstance(ln.poll(1.0), Wait)
    assert isinstance(ln.poll(2.0), Fetch)


def test_a_head_below_the_cursor_restarts_the_stream() -> None:
    ln = lane(cursor=40)
    assert ln.observe_head(3) is True
    assert ln.cursor == 0 and ln.poll(0.0) == Fetch(1, 1)
    assert ln.observe_head(3) is False


def test_an_attempt_in_flight_when_the_stream_is_replaced_is_stale() -> None:
    ln = lane(cursor=3)
    ln.observe_head(5)
    old = ln.fetched(store(5)[3:4], 0.0)
    assert old is not None and old.first == 4
    assert ln.observe_head(2)  # wiped and refilled a little while the POST was in flight
    assert ln.result(Response(200), 1.0, old) == Stale()
    assert ln.cursor == 0
    new = ln.fetched([msg(1)], 1.0)
    assert ln.result(Response(200), 1.0, old) == Stale()  # not the lane's attempt any more
    assert ln.result(Response(200), 1.0, new) == Acked(cursor=1, count=1)


def test_single_body_is_the_websocket_frame() -> None:
    from chainpush.push import wire

    assert body_of([msg(3)]) == wire.message(msg(3))
    assert webhook_id("user:0xAb", 7, 7) == "user:0xAb:7"
    assert webhook_id("user:0xAb", 7, 9) == "user:0xAb:7-9"
    assert webhook_id("user:0xAb", 7, 9, "9b1c") == "user:0xAb:7-9@9b1c"


def test_signature_verifies_with_standardwebhooks() -> None:
    import time

    cfg = hook()
    now = int(time.time())
    body = body_of([msg(1)])
    headers = signed_headers(cfg.key, f"{TOPIC}:1", now, body)
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + " ", headers)
    other = "whsec_" + base64.b64encode(b"z" * 24).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.mark.parametrize("seed", range(300))
def test_simulated_flaky_endpoint_acknowledges_everything_in_order(seed: int) -> None:
    """A lane against an endpoint that fails, hangs, answers 429 or acks after processing (a
    lost ack): every offset is acknowledged, in order, each request's id matches its range."""
    rng = random.Random(seed)
    batch = rng.choice([1, 1, 3])
    ln = lane(hook(batch_size=batch, max_failures=10_000, max_client_errors=10_000), seed=seed)
    total = rng.randint(1, 40)
    rows: list[StoredMessage] = []
    received: list[int] = []  # offsets the endpoint processed (duplicates allowed)
    acked: list[int] = []
    now = 0.0
    for _step in range(5000):
        if len(rows) < total and rng.random() < 0.3:
            rows.append(msg(len(rows) + 1))
            ln.observe_head(len(rows))
        action = ln.poll(now)
        if isinstance(action, Idle):
            if len(rows) == total:
                break
            now += 0.1
        elif isinstance(action, Wait):
            now = action.until
        elif isinstance(action, Fetch):
            got = read(rows, action)
            ln.fetched(got if rng.random() > 0.05 else [], now)
        else:
            a = action.attempt
            assert a.webhook_id == webhook_id(TOPIC, a.first, a.last)
            roll = rng.random()
            if roll < 0.2:
                outcome: Response | Failure = Response(rng.choice([500, 503, 429, 302]))
            elif roll < 0.3:
                outcome = Failure("timeout")
            elif roll < 0.35:
                received.extend(range(a.first, a.last + 1))
                outcome = Failure("connection reset after processing")
            else:
                received.extend(range(a.first, a.last + 1))
                outcome = Response(200)
            decision = ln.result(outcome, now)
            if isinstance(decision, Acked):
                acked.extend(range(a.first, a.last + 1))
            now += 0.01
    assert acked == list(range(1, total + 1)), f"seed {seed}"
    # at least once: every offset reached the endpoint, first deliveries in order
    first_seen = list(dict.fromkeys(received))
    assert first_seen == list(range(1, total + 1)), f"seed {seed}"


def test_retry_after_lengthens_the_delay_within_the_cap() -> None:
    assert retry_after_s("7") == 7.0 and retry_after_s(" 2 ") == 2.0
    assert retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    ln = lane(hook(first_backoff_s=0.1, max_backoff_s=5.0))
    ln.observe_head(1)
    ln.fetched(store(1), 0.0)
    decision = ln.result(Response(429, retry_after_s=3.0), 0.0)
    assert isinstance(decision, Retry) and decision.until == 3.0
    decision = ln.result(Response(503, retry_after_s=3600.0), 10.0)
    assert isinstance(decision, Retry) and decision.until == 15.0


def test_dev_receiver_lines_show_app_data_and_event_args() -> None:
    from chainpush.push.webhook_receiver import describe

    app = {"topic": "app:demo-txs", "offset": 3, "record": {
        "kind": "app", "event": "tx.sent", "data": {"hash": "0xab", "what": "DemoPair.swap"}}}
    assert describe(app) == 'app:demo-txs #3 tx.sent {"hash":"0xab","what":"DemoPair.swap"}'
    event = {"topic": "contract:DemoPair", "offset": 1, "record": {
        "kind": "event", "event": "Sync", "args": {"reserve0": "1000", "reserve1": "1000"},
        "status": "pending", "block_number": 56}}
    assert describe(event) == ("contract:DemoPair #1 Sync(reserve0=1000, reserve1=1000) "
                               "pending block 56")

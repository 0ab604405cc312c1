"""The per-connection session (pure): states, refusals, isolation, and any frame sequence."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chainpush.push import wire
from chainpush.push.records import StoredMessage
from chainpush.push.session import (
    Action,
    Admit,
    Close,
    Drop,
    Fetch,
    Repair,
    Send,
    Session,
    SessionConfig,
    SessionLimits,
)
from chainpush.push.subscription import Filter
from chainpush.push.tokens import Claims, TokenConfig, issue

SECRET = "s" * 40
TOKENS = TokenConfig(secret=SECRET)
NOW = 1_800_000_000.0


def token(topics: tuple[str, ...] = ("contract:*", "state:*"), ttl: float = 600) -> str:
    return issue(Claims(user="alice", wallets=(), topics=topics, expires_at=int(NOW + ttl)),
                 TOKENS, now=NOW)


def session(**limits: Any) -> Session:
    return Session(7, SessionConfig(node_id="n1", tokens=TOKENS, heartbeat_s=20,
                                    limits=SessionLimits(**limits)))


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, Send)]


def opened(**limits: Any) -> Session:
    s = session(**limits)
    actions = s.receive_text(json.dumps({"type": "auth", "token": token()}), NOW)
    assert [type(a) for a in actions] == [Admit]
    assert sent(s.admit())[0]["type"] == "welcome"
    assert s.state == "open"
    return s


def subscribe(s: Session, topic: str, **kw: Any) -> list[Action]:
    return s.receive_text(json.dumps({"type": "subscribe", "topic": topic, **kw}), NOW)


def msg(topic: str, offset: int, epoch: str | None = None, **record: Any) -> StoredMessage:
    return StoredMessage(topic=topic, offset=offset, msg_id=f"m{offset}", epoch=epoch,
                         record={"event": "Transfer", "args": {"ids": ["1", "2"]}, **record})


def test_first_frame_refusals_close_with_their_codes() -> None:
    for data, code in [("{nope", wire.CLOSE_BAD_FIRST_FRAME),
                       ('{"type": "ping"}', wire.CLOSE_BAD_FIRST_FRAME),
                       ('{"type": "auth", "token": "x.y.z"}', wire.CLOSE_AUTH_FAILED),
                       (json.dumps({"type": "auth", "token": token(ttl=-60)}),
                        wire.CLOSE_TOKEN_EXPIRED)]:
        s = session()
        assert s.receive_text(data, NOW) == [Close(code)]
        assert s.state == "closed"
        assert s.receive_text('{"type": "ping"}', NOW) == []


def test_subscribe_fetch_ready_repair_history_live() -> None:
    s = opened()
    (fetch,) = subscribe(s, "contract:A", since=0)
    assert isinstance(fetch, Fetch)
    sub = fetch.sub
    assert sub.offer(msg("contract:A", 1)) == "skip"  # head not read yet: the repair reads it
    actions = s.subscribe_ready(sub, head=2)
    assert sent(actions)[0] == {"type": "subscribed", "topic": "contract:A", "since": 0,
                                "head": 2, "epoch": None, "reset": False, "ref": None}
    assert actions[-1] == Repair(sub)
    out, step = s.history(sub, [msg("contract:A", 1), msg("contract:A", 2)], page=10)
    assert [m.offset for m in out] == [1, 2] and step == "done"
    assert sub.offer(msg("contract:A", 3)) == "send"
    assert sub.offer(msg("contract:A", 3)) == "skip"  # duplicate
    assert sub.offer(msg("contract:A", 5)) == "repair"  # gap


def test_a_page_being_written_keeps_live_messages_behind_it() -> None:
    """The node writes a history page with awaits in between (it yields to other clients):
    a live message arriving meanwhile must not be written before the page's last row (seen
    under attack load: offsets 599, 601, 600 reached a client)."""
    s = opened()
    (fetch,) = subscribe(s, "contract:A", since=0)
    sub = fetch.sub
    s.subscribe_ready(sub, head=2)
    out, _ = s.history(sub, [msg("contract:A", 1), msg("contract:A", 2)], page=10,
                       finish=False)
    assert [m.offset for m in out] == [1, 2]
    assert sub.offer(msg("contract:A", 3)) == "skip"  # still in repair: noted, not sent
    assert s.finish_history(sub, full_page=False, empty=False) == "more"  # read 3 next
    out, step = s.history(sub, [msg("contract:A", 3)], page=10)
    assert [m.offset for m in out] == [3] and step == "done"
    assert sub.offer(msg("contract:A", 4)) == "send"


def test_refusals_keep_the_connection_open() -> None:
    s = opened(max_subscriptions=1, contracts=frozenset({"A"}))
    assert sent(subscribe(s, "contract:Auktion"))[0]["code"] == "unknown_topic"
    assert sent(subscribe(s, "user:0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"))[0]["code"] \
        == "forbidden_topic"
    assert isinstance(subscribe(s, "contract:A")[-1], Fetch)
    assert sent(subscribe(s, "state:A"))[0]["code"] == "too_many_subscriptions"
    # '²'.isdigit() is true but int('²') raises; 5,000 digits are beyond int()'s limit
    for key in ("args.ids.²", "args.ids." + "9" * 5000):
        assert sent(subscribe(s, "contract:A", filter={key: "1"}))[0]["code"] == "bad_message"
    assert sent(subscribe(s, "contract:A", filter={"event": ["0x"] * 12900}))[0]["code"] \
        == "filter_too_large"
    assert s.state == "open"


def test_one_failure_drops_only_that_subscription() -> None:
    s = opened()
    a = subscribe(s, "contract:A")[-1]
    b = subscribe(s, "contract:B")[-1]
    assert isinstance(a, Fetch) and isinstance(b, Fetch)
    actions = s.fail(a.sub, "boom")
    assert actions[0] == Drop(a.sub)
    assert sent(actions)[0]["code"] == "subscription_failed"
    assert list(s.subs) == ["contract:B"] and not a.sub.active and b.sub.active
    assert s.subscribe_ready(a.sub, head=3) == []  # a late callback is ignored
    assert s.history(a.sub, [], page=10) == ([], "stale")


def test_rate_limit_closes() -> None:
    s = opened(rate_per_s=1, rate_burst=2)
    ping = '{"type": "ping"}'
    assert sent(s.receive_text(ping, NOW)) and sent(s.receive_text(ping, NOW))
    assert s.receive_text(ping, NOW)[-1] == Close(wire.CLOSE_RATE_LIMITED)
    assert s.state == "closed"


def test_epochs_reset_a_foreign_position_and_follow_a_replaced_stream() -> None:
    s = opened()
    (fetch,) = subscribe(s, "contract:A", since=2, epoch="old")
    assert isinstance(fetch, Fetch)
    sub = fetch.sub
    frame = sent(s.subscribe_ready(sub, head=5, epoch="new"))[0]
    assert (frame["since"], frame["epoch"], frame["reset"]) == (0, "new", True)
    s.history(sub, [msg("contract:A", n, epoch="new") for n in range(1, 6)], page=10)
    assert sub.offer(msg("contract:A", 6, epoch="new")) == "send"
    assert sub.offer(msg("contract:A", 1, epoch="newer")) == "restart"  # store replaced
    sub.restart("newer", 1)
    assert (sub.cursor.next, sub.cursor.repairing, sub.epoch) == (1, True, "newer")
    assert sub.behind(3, "newer") is None  # a repair is already running
    assert sub.behind(3, "newest") == "restart"


def test_compiled_filter_costs_one_lookup_per_key() -> None:
    wanted = tuple(f"0x{i:040x}" for i in range(256))
    f = Filter({"args.to": wanted, "event": ("Transfer",)})
    assert f.matches({"event": "Transfer", "args": {"to": wanted[-1].upper().replace("X", "x")}})
    assert not f.matches({"event": "Transfer", "args": {"to": "0x" + "f" * 40}})
    assert not f.matches({"event": "Transfer", "args": {"to": 1.5}})


frames = st.one_of(
    st.just(json.dumps({"type": "auth", "token": token()})),
    st.just(json.dumps({"type": "auth", "token": token(ttl=-100)})),
    st.sampled_from(['{"type": "ping"}', "{bad", '{"type": "shout"}', "[1]",
                     '{"type": "unsubscribe", "topic": "contract:A"}']),
    st.builds(lambda t, since, f: json.dumps(
        {"type": "subscribe", "topic": t, **({"since": since} if since is not None else {}),
         **({"filter": f} if f else {})}),
        st.sampled_from(["contract:A", "contract:B", "state:A", "user:0x1", "contract:Nope"]),
        st.none() | st.integers(min_value=0, max_value=5),
        st.dictionaries(st.sampled_from(["event", "args.to", "args.x.²", "bogus"]),
                        st.text(max_size=3), max_size=2)),
    st.text(max_size=30),
    st.binary(max_size=5),
)
steps = st.lists(st.tuples(st.sampled_from(["frame", "admit", "ready", "fail", "close",
                                            "history", "live"]), frames), max_size=30)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_any_sequence_leaves_a_documented_state(script: list[tuple[str, str | bytes]]) -> None:
    s = session(max_subscriptions=2, rate_per_s=5, rate_burst=10,
                contracts=frozenset({"A", "B"}))
    indexed: set[int] = set()  # what the node's topic index would hold (ids of subscriptions)
    subs: list[Any] = []

    def do(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Fetch):
                indexed.add(id(a.sub))
                subs.append(a.sub)
            elif isinstance(a, Drop):
                indexed.discard(id(a.sub))
            elif isinstance(a, Send):
                frame = json.loads(a.text)
                assert frame["type"] in ("welcome", "subscribed", "unsubscribed", "error",
                                         "pong")
                if frame["type"] == "error":
                    assert frame["code"] in wire.ERROR_CODES
            elif isinstance(a, Close):
                assert a.code in wire.CLOSE_REASONS

    t = NOW
    for op, data in script:
        t += 0.01
        before = s.state
        if op == "frame":
            do(s.receive_text(data, t) if isinstance(data, str) else s.receive_binary(t))
        elif op == "admit":
            do(s.admit())
        elif op == "close":
            do(s.close(wire.CLOSE_GOING_AWAY))
        elif subs:
            sub = subs[len(data) % len(subs)]
            if op == "ready":
                do(s.subscribe_ready(sub, head=3))
            elif op == "fail":
                do(s.fail(sub, "x"))
            elif op == "history":
                s.history(sub, [msg(sub.topic, sub.cursor.next)], page=1)
            else:
                sub.offer(msg(sub.topic, 1 + len(data) % 4))
        assert s.state in ("auth", "admitting", "open", "closed")
        if before == "closed":
            assert s.state == "closed"
        # invariants of the module docstring
        assert len(s.subs) <= 2
        assert all(sub.active for sub in s.subs.values())
        assert {id(sub) for sub in s.subs.values()} == indexed
        if s.state == "closed":
            assert not s.subs


def test_admission_caps_and_counts() -> None:
    from chainpush.push.ratelimit import Admission, AdmissionLimits

    a = Admission(AdmissionLimits(max_connections=3, max_connections_per_ip=2,
                                  max_connections_per_user=1, connect_rate_per_ip_s=1.0,
                                  connect_burst_per_ip=3))
    assert [a.open("1.1.1.1", 0.0), a.open("1.1.1.1", 0.0)] == [None, None]
    assert a.open("1.1.1.1", 0.0) == "ip_full"
    assert a.open("1.1.1.1", 0.0) == "ip_rate"  # the burst of 3 is spent, refused or not
    assert a.open("2.2.2.2", 0.0) is None
    assert a.open("3.3.3.3", 0.0) == "node_full"
    a.close("1.1.1.1")
    assert a.open("1.1.1.1", 1.0) is None  # a second later: one token back, one slot free
    assert a.join("alice") and not a.join("alice")
    a.leave("alice")
    assert a.join("alice")
    for ip in ("1.1.1.1", "1.1.1.1", "2.2.2.2"):
        a.close(ip)
    assert a.total == 0 and not a.per_ip

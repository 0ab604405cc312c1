"""The subscribe decision (push/resume.py) and the epoch fields of the wire frames."""

from __future__ import annotations

import pytest

from chainpush.push import wire
from chainpush.push.errors import ProtocolError
from chainpush.push.records import StoredMessage
from chainpush.push.resume import Resume, resume_point, stream_replaced


def test_live_only_starts_at_the_head() -> None:
    assert resume_point(since=None, epoch=None, head=7, stream_epoch="e1") == Resume(7, False)
    assert resume_point(since=None, epoch="old", head=7, stream_epoch="e1") == Resume(7, False)


def test_a_position_in_the_current_stream_resumes() -> None:
    assert resume_point(since=5, epoch="e1", head=7, stream_epoch="e1") == Resume(5, False)
    assert resume_point(since=7, epoch="e1", head=7, stream_epoch="e1") == Resume(7, False)
    assert resume_point(since=0, epoch=None, head=0, stream_epoch=None) == Resume(0, False)
    # an older client sends no epoch: trusted while its since is not above the head
    assert resume_point(since=3, epoch=None, head=7, stream_epoch="e1") == Resume(3, False)
    # rows stored before epochs existed: nothing to compare
    assert resume_point(since=3, epoch="e1", head=7, stream_epoch=None) == Resume(3, False)


def test_a_foreign_epoch_resets_to_the_first_message() -> None:
    # the store was wiped and refilled past the client's old offset: without the epoch this
    # would resume at 5 and silently skip offsets 1..5 of the new stream
    assert resume_point(since=5, epoch="old", head=9, stream_epoch="new") == Resume(0, True)
    assert resume_point(since=0, epoch="old", head=9, stream_epoch="new") == Resume(0, True)


def test_a_since_above_the_head_resets() -> None:
    # today's clamp to the head would drop what the new, shorter stream then receives
    assert resume_point(since=40, epoch="e1", head=3, stream_epoch="e1") == Resume(0, True)
    assert resume_point(since=40, epoch="e1", head=0, stream_epoch=None) == Resume(0, True)
    assert resume_point(since=40, epoch=None, head=3, stream_epoch="e2") == Resume(0, True)


def test_stream_replaced_only_on_two_known_different_epochs() -> None:
    assert stream_replaced("a", "b")
    assert not stream_replaced("a", "a")
    assert not stream_replaced(None, "b")
    assert not stream_replaced("a", None)


def test_subscribe_epoch_parses_and_renders() -> None:
    frame = wire.parse_client_frame(
        '{"type": "subscribe", "topic": "contract:A", "since": 4, "epoch": "9b1c0e7d2f6a4a11"}')
    assert frame == wire.Subscribe(topic="contract:A", since=4, epoch="9b1c0e7d2f6a4a11")
    assert wire.parse_client_frame(wire.client_frame(frame)) == frame
    assert wire.parse_client_frame('{"type": "subscribe", "topic": "contract:A"}') == \
        wire.Subscribe(topic="contract:A")
    for bad in ('5', '"' + "e" * 65 + '"', '["e"]'):
        with pytest.raises(ProtocolError) as info:
            wire.parse_client_frame(
                '{"type": "subscribe", "topic": "contract:A", "epoch": ' + bad + ', "ref": "r"}')
        assert info.value.code == "bad_message"
        assert info.value.ref == "r"
        assert "epoch" in str(info.value)


def test_subscribed_and_message_carry_the_epoch() -> None:
    assert wire.parse_server_frame(wire.subscribed(
        topic="contract:A", since=0, head=3, epoch="e1", reset=True, ref="s")) == {
        "type": "subscribed", "topic": "contract:A", "since": 0, "head": 3, "epoch": "e1",
        "reset": True, "ref": "s"}
    msg = StoredMessage(topic="contract:A", offset=3, msg_id="x/pending", record={}, epoch="e1")
    assert wire.parse_server_frame(wire.message(msg))["epoch"] == "e1"


def test_the_inbox_payload_carries_the_epoch() -> None:
    import json

    from chainpush.push.dispatch import decode_inbox, encode_inbox

    msg = StoredMessage(topic="contract:A", offset=3, msg_id="x/pending", record={}, epoch="e1")
    assert decode_inbox(encode_inbox([msg], sent_at=1.5)) == (1.5, [msg])
    older = {"sent_at": 1, "messages": [{"topic": "contract:A", "offset": 3, "id": "x/pending",
                                         "record": {}}]}  # from a dispatcher before epochs
    assert decode_inbox(json.dumps(older))[1][0].epoch is None
    older["messages"][0]["epoch"] = 7  # type: ignore[index]
    with pytest.raises(TypeError, match="epoch"):
        decode_inbox(json.dumps(older))

"""Webhooks on real parts: nx-27017, a real HTTP receiver that misbehaves, the deliverer in this
process or as a ``chainpush webhooks`` subprocess SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chainpush import procs
from chainpush.push.collect import Collector
from chainpush.push.config import StoresConfig
from chainpush.push.metrics import Metrics
from chainpush.push.webhook_config import WebhookConfig, WebhooksServerConfig, WebhooksSettings
from chainpush.push.webhook_delivery import Deliverer
from tests.integration.push_support import ALICE, BOB, FAST, make_record
from tests.integration.webhook_support import (
    SECRET,
    Delivery,
    Receiver,
    check_in_order,
    eventually,
)

pytestmark = pytest.mark.integration

CHAINPUSH = str(Path(sys.executable).with_name("chainpush"))
TOPIC = "contract:DemoToken"
USER_TOPICS = (f"user:{ALICE}", f"user:{BOB}")


def hook(name: str, url: str, **kw: Any) -> WebhookConfig:
    base: dict[str, Any] = {"name": name, "url": url, "secret": SECRET, "topics": (TOPIC,),
                            "timeout_s": 0.5, "first_backoff_s": 0.05, "max_backoff_s": 0.4,
                            "max_failures": 1000}
    base.update(kw)
    return WebhookConfig(**base)


def settings(*hooks: WebhookConfig) -> WebhooksSettings:
    return WebhooksSettings(webhooks=hooks, server=WebhooksServerConfig(
        poll_interval_s=0.1, discover_interval_s=0.3, port=0))


async def write(mongo_uri: str, db: str, first: int, count: int) -> None:
    """``count`` records (each under contract:DemoToken, user:ALICE and user:BOB)."""
    async with Collector(mongo_uri=mongo_uri, database=db, retry=FAST) as collector:
        for n in range(first, first + count):
            await collector.accept([make_record(n)])


def config_toml(path: Path, mongo_uri: str, db: str, port: int, hooks: list[dict[str, Any]],
                ) -> Path:
    lines = ["[stores]", f'mongo_uri = "{mongo_uri}"', f'database = "{db}"', "",
             "[webhooks_server]", f"port = {port}", "poll_interval_s = 0.1",
             "discover_interval_s = 0.3", ""]
    for h in hooks:
        lines.append("[[webhooks]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in h.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def chainpush(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINPUSH, *args], capture_output=True, text=True, timeout=30,
                          check=False)


async def test_a_dead_endpoint_or_a_hanging_topic_never_delays_the_others(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    """Webhook ``dead`` points at a closed port; webhook ``mixed`` gets every request of one
    user topic hung past its timeout: the other topics and the other webhook go on."""
    receiver = Receiver(hang_s=3.0)
    hung = USER_TOPICS[0]

    def behaviour(path: str, delivery: Delivery) -> int | str:
        return "hang" if delivery.messages[0]["topic"] == hung else 200

    receiver.behaviour = behaviour
    await receiver.start()
    stores = StoresConfig(mongo_uri=mongo_uri, database=mongo_db_name)
    cfg = settings(
        hook("dead", f"http://127.0.0.1:{procs.free_port()}/x"),
        hook("mixed", receiver.url("mixed"), topics=(TOPIC, "user:*")),
        hook("fine", receiver.url("fine"), batch_size=4),
    )
    try:
        await write(mongo_uri, mongo_db_name, 1, 12)
        async with Deliverer(cfg, stores, metrics=Metrics()) as deliverer:
            task = asyncio.create_task(deliverer.run())
            try:
                want = {TOPIC: 12, USER_TOPICS[1]: 12}
                await receiver.wait(
                    lambda: {t: len(set(o)) for t, o in receiver.acked("mixed").items()} == want
                    and len(set(receiver.acked("fine").get(TOPIC, []))) == 12,
                    20 * unit, "the healthy topics and webhook")
                await write(mongo_uri, mongo_db_name, 13, 4)  # live, after the backlog
                await receiver.wait(
                    lambda: len(set(receiver.acked("fine").get(TOPIC, []))) == 16,
                    10 * unit, "live messages to the healthy webhook")
                assert not deliverer.runners[0].paused_now()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        check_in_order(receiver, "fine", {TOPIC: 16})
        # the hung topic was tried (and never acknowledged), always with its first message
        tried = [d for d in receiver.deliveries if d.path == "mixed"
                 and d.messages[0]["topic"] == hung]
        assert tried and {d.webhook_id.split("@")[0] for d in tried} == {f"{hung}:1"}
        fine = [d for d in receiver.deliveries if d.path == "fine"]
        assert max(len(d.messages) for d in fine) > 1  # batches were used
        assert all(d.webhook_id.count("-") <= 1 for d in fine)
        assert receiver.bad == []
    finally:
        await receiver.stop()


async def test_pause_on_410_and_repeated_4xx_then_status_resume_and_replay(
    mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """410 pauses at once, three 400s in a row pause: nothing is skipped, status shows it,
    /metrics counts it; ``resume`` delivers from where it stopped; ``replay --since`` again."""
    receiver = Receiver()
    answers: dict[str, list[int]] = {"gone": [410], "picky": [400, 400, 400]}

    def behaviour(path: str, delivery: Delivery) -> int | str:
        queue = answers.get(path, [])
        return queue.pop(0) if queue else 200

    receiver.behaviour = behaviour
    await receiver.start()
    await write(mongo_uri, mongo_db_name, 1, 5)
    port = procs.free_port()
    config = config_toml(tmp_path / "cp.toml", mongo_uri, mongo_db_name, port, [
        {"name": name, "url": receiver.url(name), "secret": SECRET, "topics": [TOPIC],
         "timeout_s": 1.0, "first_backoff_s": 0.05, "max_backoff_s": 0.2}
        for name in ("gone", "picky", "ok")])
    server = procs.spawn("webhooks", [CHAINPUSH, "webhooks", "--config", str(config)],
                         tmp_path / "webhooks.log", f"http://127.0.0.1:{port}",
                         lambda: procs.port_open("127.0.0.1", port), timeout_s=20 * unit)
    try:
        await receiver.wait(lambda: len(receiver.acked("ok").get(TOPIC, [])) == 5, 20 * unit,
                            "the healthy webhook")

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        async def paused_gauge(value: int) -> None:
            await eventually(lambda: f"chainpush_webhooks_paused {value}\n" in metrics(),
                             10 * unit, f"{value} webhook(s) paused in /metrics")

        await paused_gauge(2)
        status = json.loads((await asyncio.to_thread(
            chainpush, "webhooks", "status", "--json", "--config", str(config))).stdout)
        by_name = {h["name"]: h for h in status}
        assert by_name["ok"]["state"] == "active"
        assert by_name["gone"]["state"] == "paused" and "410" in by_name["gone"]["paused"]
        assert by_name["picky"]["state"] == "paused"
        assert "3 client errors" in by_name["picky"]["paused"]
        for name in ("gone", "picky"):
            (lane,) = by_name[name]["topics"]
            assert (lane["cursor"], lane["head"], lane["behind"]) == (0, 5, 5)
            assert re.fullmatch(rf"{re.escape(TOPIC)}:1@[0-9a-f]+: HTTP 4\d\d", lane["last_error"])
        text = (await asyncio.to_thread(chainpush, "webhooks", "status", "--config",
                                        str(config))).stdout
        assert "gone  paused" in text and "cursor 0 / head 5" in text
        assert "chainpush_webhook_failures_total 4\n" in await asyncio.to_thread(metrics)
        # nothing was skipped while paused: the first message was never acknowledged
        assert "gone" not in receiver.acked("gone") and receiver.acked("picky") == {}

        done = await asyncio.to_thread(chainpush, "webhooks", "resume", "gone", "--config",
                                       str(config))
        assert done.returncode == 0, done.stderr
        await receiver.wait(lambda: len(receiver.acked("gone").get(TOPIC, [])) == 5,
                            10 * unit, "the resumed webhook")
        check_in_order(receiver, "gone", {TOPIC: 5})
        await paused_gauge(1)

        done = await asyncio.to_thread(chainpush, "webhooks", "replay", "ok", "--since", "3",
                                       "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert f"ok {TOPIC}: delivering again from offset 4" in done.stdout
        await receiver.wait(lambda: receiver.acked("ok").get(TOPIC) == [1, 2, 3, 4, 5, 4, 5],
                            10 * unit, "the replay")
        bad = await asyncio.to_thread(chainpush, "webhooks", "replay", "nope", "--since", "1",
                                      "--config", str(config))
        assert bad.returncode == 2 and "no webhook named 'nope'" in bad.stderr
        assert receiver.bad == []
    finally:
        server.stop()
        await receiver.stop()


async def test_start_head_skips_the_backlog_only(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    receiver = Receiver()
    await receiver.start()
    stores = StoresConfig(mongo_uri=mongo_uri, database=mongo_db_name)
    await write(mongo_uri, mongo_db_name, 1, 3)
    cfg = settings(hook("tail", receiver.url("tail"), start="head"),
                   hook("all", receiver.url("all")))
    try:
        async with Deliverer(cfg, stores) as deliverer:
            task = asyncio.create_task(deliverer.run())
            try:
                await receiver.wait(lambda: len(receiver.acked("all").get(TOPIC, [])) == 3,
                                    10 * unit, "the backlog")
                await write(mongo_uri, mongo_db_name, 4, 2)
                await receiver.wait(lambda: receiver.acked("tail").get(TOPIC) == [4, 5]
                                    and len(receiver.acked("all")[TOPIC]) == 5,
                                    10 * unit, "the new messages only")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        assert receiver.acked("all")[TOPIC] == [1, 2, 3, 4, 5]
    finally:
        await receiver.stop()


async def test_a_replaced_stream_is_delivered_again_from_offset_1(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    """The topic's stream is wiped (its messages and its ``streams`` row, docs/seams.md §2) and
    offsets start again at 1 under a new epoch: the webhook delivers the new stream from offset
    1 rather than waiting past its old cursor, under ids that name the new epoch."""
    import pymongo

    from chainpush.constants import MESSAGES, STREAMS

    receiver = Receiver()
    await receiver.start()
    stores = StoresConfig(mongo_uri=mongo_uri, database=mongo_db_name)
    await write(mongo_uri, mongo_db_name, 1, 5)
    metrics = Metrics()
    try:
        async with Deliverer(settings(hook("reset", receiver.url("reset"))), stores,
                             metrics=metrics) as deliverer:
            task = asyncio.create_task(deliverer.run())
            try:
                await receiver.wait(lambda: len(receiver.acked("reset").get(TOPIC, [])) == 5,
                                    10 * unit, "the first stream")

                def wipe() -> None:
                    with pymongo.MongoClient(mongo_uri) as client:
                        client[mongo_db_name][MESSAGES].delete_many({"topic": TOPIC})
                        client[mongo_db_name][STREAMS].delete_one({"_id": TOPIC})

                await asyncio.to_thread(wipe)
                # the new stream grows past the old cursor (5) before the deliverer looks: only
                # the epoch tells it apart
                await write(mongo_uri, mongo_db_name, 100, 7)
                await receiver.wait(
                    lambda: receiver.acked("reset").get(TOPIC) == [1, 2, 3, 4, 5, *range(1, 8)],
                    10 * unit, "the new stream")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        sent = [d for d in receiver.deliveries if d.path == "reset"]
        first, again = sent[0], sent[-7:]
        assert [d.messages[0]["record"]["block_number"] for d in again[:2]] == [25, 25]
        old_epoch, new_epoch = first.messages[0]["epoch"], again[0].messages[0]["epoch"]
        assert old_epoch != new_epoch
        assert [d.webhook_id for d in again] == [f"{TOPIC}:{n}@{new_epoch}" for n in range(1, 8)]
        assert metrics.counters["chainpush_webhook_resets_total"] == 1
    finally:
        await receiver.stop()


async def test_requests_in_flight_are_bounded_per_webhook(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    """Many topics with a backlog, a slow endpoint: never more than ``max_concurrency``
    requests at once, and every topic still gets everything, in order."""
    receiver = Receiver(delay_s=0.05)
    await receiver.start()
    stores = StoresConfig(mongo_uri=mongo_uri, database=mongo_db_name)
    async with Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST) as collector:
        wallets = [f"0x{i:040x}" for i in range(1, 7)]  # all digits: addresses (records.py)
        for n in range(12):
            await collector.accept([make_record(n, to=wallets[n % 6])])
    cfg = settings(hook("slow", receiver.url("slow"), topics=("user:0x000*",),
                        max_concurrency=2, timeout_s=2.0))
    heads = {f"user:{w}": 2 for w in wallets}
    try:
        async with Deliverer(cfg, stores) as deliverer:
            task = asyncio.create_task(deliverer.run())
            try:
                await receiver.wait(
                    lambda: {t: len(set(o)) for t, o in receiver.acked("slow").items()} == heads,
                    20 * unit, "every topic")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        check_in_order(receiver, "slow", heads)
        assert receiver.max_in_flight == 2
        assert receiver.bad == []
    finally:
        await receiver.stop()


async def test_sigkilled_deliverer_and_a_flaky_endpoint_lose_nothing(
    mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """The receiver fails 20 % of requests, hangs 5 % past the timeout and goes down for a while;
    ``chainpush webhooks`` is SIGKILLed mid-stream and started again: every message of every
    topic (``user:*`` discovered) is acknowledged in order, each signature verifies."""
    receiver = Receiver(seed=13, hang_s=2.0)

    def behaviour(path: str, delivery: Delivery) -> int | str:
        roll = receiver.rng.random()
        return "hang" if roll < 0.05 else 500 if roll < 0.25 else 200

    receiver.behaviour = behaviour
    await receiver.start()
    port = procs.free_port()
    base = {"secret": SECRET, "topics": [TOPIC, "user:*"], "timeout_s": 0.5,
            "first_backoff_s": 0.05, "max_backoff_s": 0.3, "max_failures": 1000}
    config = config_toml(tmp_path / "cp.toml", mongo_uri, mongo_db_name, port, [
        {"name": "single", "url": receiver.url("single"), **base},
        {"name": "batched", "url": receiver.url("batched"), "batch_size": 4, **base}])
    argv = [CHAINPUSH, "webhooks", "--config", str(config)]

    def start() -> procs.Server:
        return procs.spawn("webhooks", argv, tmp_path / "webhooks.log",
                           f"http://127.0.0.1:{port}",
                           lambda: procs.port_open("127.0.0.1", port), timeout_s=20 * unit)

    total = 40
    server = start()
    try:
        writer = asyncio.create_task(write(mongo_uri, mongo_db_name, 1, total // 2))
        await receiver.wait(lambda: len(receiver.acked("single").get(TOPIC, [])) >= 5,
                            20 * unit, "a first part")
        server.kill()  # SIGKILL mid-stream
        assert len(set(receiver.acked("single")[TOPIC])) < total
        await writer
        server = start()
        await receiver.wait(lambda: len(receiver.acked("batched").get(TOPIC, [])) >= 15,
                            20 * unit, "a second part")
        await receiver.stop()  # down for a while: connections refused
        await write(mongo_uri, mongo_db_name, total // 2 + 1, total // 4)
        await asyncio.sleep(1.0 * unit)  # the endpoint's downtime being simulated
        await receiver.start()
        await write(mongo_uri, mongo_db_name, total // 2 + total // 4 + 1, total // 4)
        heads = {TOPIC: total, USER_TOPICS[0]: total, USER_TOPICS[1]: total}

        def all_acked() -> bool:
            return all({t: len(set(o)) for t, o in receiver.acked(p).items()} == heads
                       for p in ("single", "batched"))

        await receiver.wait(all_acked, 40 * unit, "every message")
    finally:
        server.stop()
        await receiver.stop()
    for path, batch in (("single", 1), ("batched", 4)):
        check_in_order(receiver, path, heads)
        # the restart resumed from the stored cursors: the only repeats are what was acknowledged
        # but not yet recorded when the process died (one request per topic at most)
        for topic, offsets in receiver.acked(path).items():
            assert len(offsets) - len(set(offsets)) <= batch, (path, topic, offsets)
    assert receiver.bad == []
    # retries kept their id: one id per (topic, first offset) on the single webhook
    ids: dict[tuple[str, int], set[str]] = {}
    for d in receiver.deliveries:
        if d.path == "single":
            ids.setdefault((d.messages[0]["topic"], d.messages[0]["offset"]), set()).add(
                d.webhook_id)
    assert all(len(v) == 1 for v in ids.values())
    assert sum(d.answered is None for d in receiver.deliveries) > 0  # some hung
    assert sum(d.answered == 500 for d in receiver.deliveries) > 0


async def test_dev_receiver_prints_what_the_deliverer_sends(
    mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """``chainpush webhooks receive`` (the demo's receiver) verifies and prints each message;
    a request with a wrong signature is refused with 400."""
    port = procs.free_port()
    log = tmp_path / "receiver.log"
    server = procs.spawn("receiver", [CHAINPUSH, "webhooks", "receive", "--secret", SECRET,
                                      "--port", str(port)], log, f"http://127.0.0.1:{port}",
                         lambda: procs.port_open("127.0.0.1", port), timeout_s=20 * unit)
    stores = StoresConfig(mongo_uri=mongo_uri, database=mongo_db_name)
    await write(mongo_uri, mongo_db_name, 1, 3)
    try:
        async with Deliverer(settings(hook("demo", f"http://127.0.0.1:{port}/hook")),
                             stores) as deliverer:
            task = asyncio.create_task(deliverer.run())
            try:
                await eventually(lambda: log.read_text().count(f"[{TOPIC}:") == 3, 10 * unit,
                                 "three messages printed by the receiver")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        def forged() -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hook", data=b'{"type":"message"}', method="POST",
                headers={"webhook-id": "x", "webhook-timestamp": "1",
                         "webhook-signature": "v1,AAAA"})
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            return 200

        assert await asyncio.to_thread(forged) == 400
    finally:
        server.stop()
    text = log.read_text()
    assert f"{TOPIC} #1 Transfer(from={ALICE}" in text and f"[{TOPIC}:3@" in text
    assert "REFUSED x" in text


async def test_chainpush_run_includes_the_deliverer(
    mongo_uri: str, mongo_db_name: str, redis_url: str, unit: float, tmp_path: Path
) -> None:
    """``chainpush run`` (the all-in-one) delivers to ``[[webhooks]]`` of its config."""
    receiver = Receiver()
    await receiver.start()
    path = config_toml(tmp_path / "chainpush.toml", mongo_uri, mongo_db_name, 0, [
        {"name": "backend", "url": receiver.url("run"), "secret": SECRET, "topics": [TOPIC]},
    ])
    path.write_text(path.read_text().replace(
        "[stores]\n", f'[stores]\nredis_url = "{redis_url}"\n')
        + "\n[push]\nport = 0\n\n[auth]\nport = 0\n")
    log = (tmp_path / "run.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, "run", "--no-watcher", "--config", str(path), stdout=log, stderr=log)
    try:
        await write(mongo_uri, mongo_db_name, 1, 5)
        await receiver.wait(lambda: len(set(receiver.acked("run").get(TOPIC, []))) == 5,
                            30 * unit, "the webhook of chainpush run")
        check_in_order(receiver, "run", {TOPIC: 5})
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20 * unit)
        log.close()
        await receiver.stop()
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-2000:]

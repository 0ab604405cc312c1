#!/usr/bin/env python3
"""A TCP forwarder that delays every chunk by ``--delay-ms`` each way: a store "one network hop
away" for the benchmarks (a collector and its MongoDB on different machines of one LAN or zone,
about 0.5 to 2 ms round trip), on one machine. Order is kept per direction; nothing is dropped.

    python bench/delay_proxy.py --listen 40001 --target 127.0.0.1:27018 --delay-ms 0.5

Prints ``ready`` once it listens. Used by ``bench/bench_collect.py --rtt-ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay_s`` after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(65536):
            queue.put_nowait((loop.time() + delay_s, chunk))
    except ConnectionError:
        pass
    finally:
        queue.put_nowait((0.0, b""))
        await sender


async def main(args: argparse.Namespace) -> None:
    host, port = args.target.rsplit(":", 1)
    delay_s = args.delay_ms / 1000.0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pump(client_r, server_w, delay_s), pump(server_r, client_w, delay_s),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, required=True, help="each way")
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)

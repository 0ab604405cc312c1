#!/usr/bin/env python3
"""Write the demo's configuration: the built-in demo config plus a webhook to a local receiver.

    python scripts/demo_config.py .chainpush/dev/demo.toml --webhook-url http://127.0.0.1:8790/hooks

``chainpush run`` without a ``chainpush.toml`` watches the demo contracts already; the demo
(``scripts/demo.sh``) also shows backend delivery, so it runs from this file: the same
contracts (``watcher.config.DEMO_CONFIG``, paths made absolute so the file may live anywhere)
and one ``[[webhooks]]`` entry, ``demo-receiver``, with a fresh Standard Webhooks secret, that
``chainpush webhooks receive demo-receiver --config FILE`` verifies. Copy it as a start for a
project's own ``chainpush.toml``.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import tomllib
from pathlib import Path

from chainpush.push.config import DEMO_DEV_TOPICS
from chainpush.watcher.config import DEMO_CONFIG

WEBHOOK = """
[[webhooks]]
name = "demo-receiver"                  # chainpush webhooks status | replay demo-receiver …
url = "{url}"
secret = "{secret}"
topics = ["contract:DemoToken", "contract:DemoPair", "app:*"]
"""
#: the page's dev login: its Transactions card follows tx:<hash> topics and the hashes
#: announced on app:demo-txs (a tx: topic is granted only by a tx: pattern, docs/push.md)
AUTH = """
[auth]
dev_topics = [{topics}]
"""


def render(*, root: Path, webhook_url: str, secret: str) -> str:
    """The demo config with ``abi_dir``/``deployments`` under ``root``, plus the webhook."""
    text = DEMO_CONFIG.replace('abi_dir = "abi"', f'abi_dir = "{root / "abi"}"').replace(
        'deployments = "deployments"', f'deployments = "{root / "deployments"}"')
    text += WEBHOOK.format(url=webhook_url, secret=secret)
    text += AUTH.format(topics=", ".join(f'"{t}"' for t in DEMO_DEV_TOPICS))
    tomllib.loads(text)  # what is written parses
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="where to write the TOML file")
    parser.add_argument("--webhook-url", required=True, help="the demo receiver's URL")
    args = parser.parse_args(argv)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    root = Path(__file__).resolve().parent.parent
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(render(root=root, webhook_url=args.webhook_url, secret=secret))
    print(f"wrote {args.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The verification examples of docs/webhooks.md accept what the deliverer signs and refuse a
tampered body or a wrong secret (the Node one run under node, the Python one exec'd)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from chainpush.push.records import StoredMessage
from chainpush.push.webhooks import body_of, signed_headers

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec_" + base64.b64encode(b"d" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"e" * 32).decode()


def block(after: str, lang: str) -> str:
    text = DOC.read_text()
    match = re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", text, re.S)
    assert match is not None, f"no {lang} block after {after!r} in {DOC}"
    return match.group(1)


def signed() -> tuple[str, dict[str, str]]:
    body = body_of([StoredMessage(topic="contract:DemoToken", offset=i, msg_id=f"m{i}",
                                  record={"id": f"r{i}"}) for i in (1, 2)])
    return body, signed_headers(base64.b64decode(SECRET[6:]), "contract:DemoToken:1-2",
                                int(time.time()), body)


@pytest.mark.requires(shutil.which("node") is not None, "node is not on PATH")
def test_node_example_verifies() -> None:
    code = block("<!-- verify-node -->", "js") + (
        "const [secret, headers, body] = JSON.parse(process.argv[1]);\n"
        "console.log(JSON.stringify(verifyWebhook(secret, headers, body)));\n")
    body, headers = signed()
    cases = [(SECRET, headers, body, True), (SECRET, headers, body + " ", False),
             (OTHER, headers, body, False),
             (SECRET, {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, body,
              False)]
    for secret, hdrs, data, want in cases:
        out = subprocess.run(["node", "-e", code, json.dumps([secret, hdrs, data])],
                             capture_output=True, text=True, timeout=20, check=True)
        assert json.loads(out.stdout) is want, (hdrs, data[:40])


def test_python_example_verifies() -> None:
    code = block("Python, with the `standardwebhooks` package:", "python")
    handled: list[tuple[str, int]] = []
    scope: dict[str, Any] = {"handle": lambda t, o, i, r: handled.append((t, o))}
    exec(code.replace('"whsec_…"', repr(SECRET)), scope)
    body, headers = signed()
    assert scope["receive"](body.encode(), headers) == 204
    assert handled == [("contract:DemoToken", 1), ("contract:DemoToken", 2)]
    assert scope["receive"]((body + " ").encode(), headers) == 400

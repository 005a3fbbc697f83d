"""Standard Webhooks signatures (https://www.standardwebhooks.com): the webhook worker signs each
delivery (delivery/webhooks.py) and a receiver checks it with `verify_webhook` (re-exported by
`lantern.client`). `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the base64 bytes after
`whsec_`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

WEBHOOK_TOLERANCE_S = 300  # refuse timestamps further than 5 min from now


class WebhookVerificationError(Exception):
    """`verify_webhook` refused a delivery (bad or missing signature, stale timestamp)."""


def secret_bytes(secret: str) -> bytes:
    """`whsec_<base64>` -> key bytes (as the standardwebhooks package decodes it)."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str,
                   tolerance_s: float = WEBHOOK_TOLERANCE_S, now: float | None = None) -> dict[str, Any]:
    """Check a delivery's Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the base64 key after
    `whsec_`) and timestamp (within `tolerance_s` of now); return the parsed body, or raise
    `WebhookVerificationError`. `body` must be the raw bytes received, not re-serialised JSON."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far from now (replay?)")
    text = body.decode() if isinstance(body, bytes) else body
    try:
        expected = sign(secret, msg_id, timestamp, text).encode()
    except ValueError:
        raise WebhookVerificationError("the secret is not whsec_ + base64") from None
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return json.loads(text)
    raise WebhookVerificationError("no matching v1 signature")

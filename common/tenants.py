"""Tenant names and the `tenant=value` lists the settings hold: API keys (`LANTERN_API_KEYS`, the
lines of `LANTERN_API_KEYS_FILE`) and webhook secrets (`LANTERN_WEBHOOK_SECRETS`). The API
(service/auth.py, service/main.py) and the webhook worker (delivery/webhooks.py) read the same format,
so it is parsed here, once."""

from __future__ import annotations

import re

TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def tenant_pairs(text: str, sep: str) -> list[tuple[str, str]]:
    """`tenant=value` entries separated by `sep` (`#` starts a comment) -> [(tenant, value)]; a bad entry raises."""
    out = []
    for raw in text.split(sep):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tenant, eq, value = line.partition("=")
        tenant, value = tenant.strip(), value.strip()
        if not eq or not value or not TENANT.match(tenant):
            raise ValueError(f"bad entry {line[:40]!r}: expected tenant=value, tenant in [A-Za-z0-9._-]{{1,64}}")
        out.append((tenant, value))
    return out


def parse_secrets(spec: str | None) -> dict[str, str]:
    """`LANTERN_WEBHOOK_SECRETS`: `tenant=whsec_...` pairs -> {tenant: secret}."""
    return dict(tenant_pairs(spec or "", ","))

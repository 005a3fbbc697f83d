"""`from lantern.client import Client, AsyncClient, LanternError, verify_webhook`: re-exports
service/client.py (no torch)."""

from service.client import (  # noqa: F401
    AsyncClient,
    AsyncJob,
    Client,
    Job,
    LanternError,
    WebhookVerificationError,
    result_type,
    verify_webhook,
)

__all__ = ["AsyncClient", "AsyncJob", "Client", "Job", "LanternError", "WebhookVerificationError", "result_type",
           "verify_webhook"]

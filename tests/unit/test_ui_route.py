"""/ui and its assets are served from the package and need no API key, even on a secured API (the
page sends the key the user types); the JSON routes still do."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def test_explorer_is_public_and_offline():
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", api_keys="acme=secret-key-123456"))
    with TestClient(app) as c:
        page = c.get("/ui")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Lantern explorer" in page.text and "http" not in page.text.replace("http://www.w3.org", "")  # no CDN
        for asset in ("app.js", "views.js", "style.css"):
            r = c.get(f"/ui/static/{asset}")
            assert r.status_code == 200 and len(r.text) > 500
            assert "https://" not in r.text and "cdn" not in r.text.lower()
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/openapi.json").status_code == 401

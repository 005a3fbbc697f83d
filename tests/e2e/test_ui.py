"""The explorer page in a real browser: Debian's chromium driven headless by Playwright (the system
executable; `make test` installs both), against the real API and worker (the `service` fixture).
Screenshots go to $LANTERN_SCREENSHOTS (set it to docs/img to refresh the README's), else to a
temporary folder, so a test run leaves the tree clean."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMG = Path(os.environ.get("LANTERN_SCREENSHOTS") or tempfile.mkdtemp(prefix="lantern-ui-"))
CHROMIUM = os.environ.get("LANTERN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(service):
    sync_api = pytest.importorskip("playwright.sync_api", reason="make test installs playwright (dev extra)")
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make test` installs it (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)  # jobs are run before the page looks (but the form's)
        yield page
        browser.close()


def test_attribution_through_the_form(service, page):
    page.goto(service.base_url + "/ui")
    page.wait_for_selector("#form-kind option[value=attribution]", state="attached")
    page.select_option("#form-kind", "attribution")
    assert page.input_value("#form-input-prompt").startswith("When Mary and John")  # the OpenAPI example
    page.fill("#form-input-target", " Mary")
    page.fill("#form-params", '{"n_steps": 16}')
    page.click("#submit")
    page.wait_for_selector("#result[data-kind=attribution][data-status=finished] .attr-cell")
    job_id = page.get_attribute("#result", "data-job")
    view = service.http.get(f"/v1/jobs/{job_id}").json()
    result = view["result"]
    cells = page.query_selector_all(".heatmap[data-target='0'] .attr-cell")
    assert len(cells) == len(result["input_tokens"])
    assert [c.get_attribute("data-token") for c in cells] == result["input_tokens"]
    assert [float(c.get_attribute("data-score")) for c in cells] == result["scores"][0]
    assert page.locator(f"#jobs tr[data-job='{job_id}'][data-status=finished]").count() == 1
    assert "convergence" in page.inner_text("#result")
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / "attribution.png"), full_page=True)


def test_attention_head_matrix(service, page):
    view = service.run({"kind": "attention", "model": "smollm2-135m",
                        "input": {"prompt": "When Mary and John went to the store, John gave a drink to"},
                        "params": {"measures": ["weights", "norms"], "layers": [0, 1, 2]}})
    page.goto(f"{service.base_url}/ui#{view['id']}")
    page.wait_for_selector("#result[data-kind=attention][data-status=finished] canvas.head-thumb")
    thumbs = page.query_selector_all("canvas.head-thumb")
    assert len(thumbs) == 3 * 9  # layers × SmolLM2's 9 query heads
    page.click("canvas.head-thumb[data-layer='1'][data-head='3']")
    page.wait_for_selector("#head-matrix svg.head-matrix")
    n = len(view["result"]["tokens"])
    cells = page.query_selector_all("#head-matrix rect.cell")
    assert len(cells) == n * n  # tokens on both axes
    assert "Layer 1, head 3" in page.inner_text("#head-matrix")
    weight = float(page.get_attribute("#head-matrix rect.cell[data-row='5'][data-col='1']", "data-value"))
    assert weight == view["result"]["layers"][1]["weights"][3][5][1]
    page.check("#measure-norms")  # the weights <-> norms toggle redraws the open head
    page.wait_for_function("document.querySelector('#head-matrix h3').textContent.includes('norms')")
    norm = float(page.get_attribute("#head-matrix rect.cell[data-row='5'][data-col='1']", "data-value"))
    assert norm == view["result"]["layers"][1]["norms"][3][5][1]
    page.screenshot(path=str(IMG / "attention.png"), full_page=True)


def test_patching_grid(service, page):
    view = service.run({"kind": "activation_patching", "model": "smollm2-135m",
                        "input": {"clean_prompt": "When Mary and John went to the store, John gave a drink to",
                                  "corrupted_prompt": "When Mary and John went to the store, Mary gave a drink to",
                                  "answer": " Mary", "wrong_answer": " John"},
                        "params": {"component": "residual", "layers": [0, 10, 20, 29]}})
    page.goto(f"{service.base_url}/ui#{view['id']}")
    page.wait_for_selector("#result[data-kind=activation_patching][data-status=finished] rect.cell")
    res = view["result"]
    assert page.locator("#result rect.cell").count() == len(res["layers"]) * len(res["positions"])
    assert "layer" in page.inner_text("#result") and "normalised effect" in page.inner_text("#result")
    page.screenshot(path=str(IMG / "patching.png"), full_page=True)

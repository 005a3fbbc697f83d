"""deploy/kserve/: the InferenceService runs Lantern's API image as the explainer of a predictor,
named after a registered model (the `:explain` path KServe forwards carries it), and a Lantern worker
holds that model on the same Redis."""

from __future__ import annotations

from pathlib import Path

import yaml

from common.registry import load_registry

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kserve" / "inferenceservice.yaml"


def test_the_inference_service_runs_lantern_as_explainer_with_a_worker_for_its_model():
    docs = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}
    isvc, worker = docs["InferenceService"], docs["Deployment"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["spec"]["predictor"]
    name = isvc["metadata"]["name"]
    assert name in load_registry()  # /v1/models/<name>:explain names a Lantern model
    (explainer,) = isvc["spec"]["explainer"]["containers"]
    assert explainer["image"].startswith("lantern-api") and explainer["args"][:2] == ["lantern", "api"]
    port = int(explainer["args"][explainer["args"].index("--port") + 1])
    assert [p["containerPort"] for p in explainer["ports"]] == [port] == [8080]  # KServe's component port
    env = {e["name"]: e for e in explainer["env"]}
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("lantern-worker") and container["args"][:2] == ["lantern", "worker"]
    assert container["args"][container["args"].index("--model") + 1] == name
    worker_env = {e["name"]: e["value"] for e in container["env"]}
    assert worker_env["LANTERN_REDIS_URL"] == env["LANTERN_REDIS_URL"]["value"]  # one Redis between them
    assert "LANTERN_API_KEYS_FILE" in env

"""deploy/: manifests parse and carry the fields a cluster needs, the alert rules pass
`promtool check rules`, and every metric the dashboard and the rules name is one the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(lantern_[a-z_]+)")


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def _by_kind(kind: str) -> list[dict]:
    return [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _docs(f.name) if d["kind"] == kind]


def test_every_manifest_parses_with_kind_and_name():
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in _docs(f.name):
            assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], f.name


def test_deployments_select_their_pods_and_the_gpu_worker_is_set_up():
    deployments = {d["metadata"]["name"]: d for d in _by_kind("Deployment")}
    assert {"lantern-api", "lantern-webhook-worker", "lantern-worker-smollm2-135m"} <= set(deployments)
    for d in deployments.values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
        assert d["spec"]["template"]["spec"]["containers"][0]["image"]
    worker = deployments["lantern-worker-smollm2-135m"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["terminationGracePeriodSeconds"] >= 900  # the longest job timeout (attribution)
    api = deployments["lantern-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert any(e["name"] == "LANTERN_API_KEYS_FILE" for e in api["env"])
    services = {s["metadata"]["name"] for s in _by_kind("Service")}
    assert {"lantern-api", "lantern-redis"} <= services


def test_keda_scales_each_worker_on_its_rq_queue():
    from schemas.keys import queue_name

    deployments = {d["metadata"]["name"]: d for d in _by_kind("Deployment")}
    workers = {n for n, d in deployments.items() if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}
    assert {so["spec"]["scaleTargetRef"]["name"] for so in _by_kind("ScaledObject")} == workers  # each model scales
    for so in _by_kind("ScaledObject"):
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        model = target["metadata"]["labels"]["lantern.dev/model"]
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == f"rq:queue:{queue_name(model)}"
        assert so["spec"]["minReplicaCount"] >= 1


def test_monitoring_and_egress_policy():
    (pm,) = _by_kind("PodMonitor")
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} == {"http", "metrics"}
    policies = {p["metadata"]["name"]: p for p in _by_kind("NetworkPolicy")}
    hook = policies["lantern-webhook-egress"]["spec"]
    assert hook["policyTypes"] == ["Egress"]
    blocks = [t["ipBlock"] for rule in hook["egress"] for t in rule["to"] if "ipBlock" in t]
    assert blocks and all("169.254.0.0/16" in b["except"] and "10.0.0.0/8" in b["except"] for b in blocks)


def test_compose_has_the_five_services():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"redis", "api", "worker", "webhook-worker", "prometheus"} <= set(compose["services"])
    assert compose["services"]["api"]["ports"][0].startswith("127.0.0.1:")


def test_api_image_has_no_torch():
    steps = [line for line in (DEPLOY / "api.Dockerfile").read_text().splitlines() if line.startswith("RUN pip")]
    assert steps and all("worker]" not in s and "torch==" not in s for s in steps)
    assert any("'torch' not in sys.modules" in s for s in steps)  # the build itself proves it
    assert "nvidia/cuda" in (DEPLOY / "worker.Dockerfile").read_text()


def _our_file(name: str) -> Path | None:
    base = DEPLOY.parent / name.replace(".", "/")
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def _reached(module: str, seen: set[str]) -> set[str]:
    """`module` and every module of ours it imports, transitively (imports inside functions included)."""
    import ast

    if module in seen or (path := _our_file(module)) is None:
        return seen
    seen.add(module)
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                 if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            _reached(name, seen)
    return seen


def _copied_packages(dockerfile: str) -> set[str]:
    """Top-level folders an image copies whole (`COPY x ./x`)."""
    return {m.group(1) for m in re.finditer(r"^COPY (\w+) \./\1$", (DEPLOY / dockerfile).read_text(), re.M)}


@pytest.mark.parametrize("dockerfile, entries", [
    ("api.Dockerfile", ("service.main", "service.cli", "lantern.client", "delivery.webhook_worker", "delivery.reaper")),
    ("worker.Dockerfile", ("workers.main", "service.cli")),
])
def test_each_image_copies_every_package_its_processes_import(dockerfile, entries):
    """Whole packages only (no hand-picked files), and pyproject installs them."""
    reached = {m.split(".")[0] for e in entries for m in _reached(e, set())}
    assert reached <= _copied_packages(dockerfile), sorted(reached - _copied_packages(dockerfile))
    assert not re.search(r"^COPY \S+/\S+\.py", (DEPLOY / dockerfile).read_text(), re.M)
    include = re.search(r"^include = (\[.*\])$", (DEPLOY.parent / "pyproject.toml").read_text(), re.M).group(1)
    assert all(f'"{p}*"' in include for p in reached), (reached, include)


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    out = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def _exported() -> set[str]:
    """Series names the code exports: the API registry (with its queue collector), the worker and
    webhook metrics, expanded with the suffixes Prometheus adds."""
    from prometheus_client import REGISTRY

    import delivery.webhooks  # noqa: F401
    import workers.metrics  # noqa: F401  (registers on the default registry; no torch at import)
    from service.metrics import ApiMetrics, QueueCollector

    class Queue:  # a stand-in for the one method pair the collector calls
        def live_workers(self):
            return [{"model_ids": ["m"]}]

        def depth(self, model):
            return 0

    api = ApiMetrics()
    api.registry.register(QueueCollector(Queue(), ["m"]))
    names: set[str] = set()
    for registry in (REGISTRY, api.registry):
        for family in registry.collect():
            base = family.name
            suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count"]}
            names.add(base)
            names.update(base + s for s in suffixes.get(family.type, []))
    return {n for n in names if n.startswith("lantern_")}


def test_dashboard_and_rules_name_only_exported_metrics():
    exported = _exported()
    dashboard = json.loads((DEPLOY / "grafana" / "lantern.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    named = {m for e in exprs for m in METRIC.findall(e)}
    assert named and named <= exported, sorted(named - exported)
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("request", "error", "p95", "queue depth", "queue wait", "busy", "gpu memory", "webhook"):
        assert topic in titles, topic
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"LanternQueueBacklog", "LanternJobFailureRate", "LanternNoLiveWorker", "LanternWebhookFailures"} <= alerts


def test_api_image_carries_the_explorer_and_the_client():
    text = (DEPLOY / "api.Dockerfile").read_text()
    assert "COPY service ./service" in text and "COPY lantern ./lantern" in text  # service/ui/static rides along
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    assert '"ui/static/*"' in pyproject and '"lantern*"' in pyproject  # installed as package data
    assert "static/index.html" in text  # the image build checks the page is installed

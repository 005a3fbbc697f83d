"""Property-based attack over the OpenAPI spec (schemathesis) against the running API with a worker:
at least 1,000 generated cases in all, 0 responses 5xx, every 4xx a problem+json."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.attack.conftest import KEYS, Stack

pytestmark = pytest.mark.slow
CASES_PER_OPERATION = 115
MIN_CASES = 1000


@pytest.fixture(scope="module")
def fuzz_stack(attack_redis, tiny_model_dir):
    s = Stack(attack_redis.url(2), tiny_model_dir, {"LANTERN_MAX_NEW_TOKENS": "4", "LANTERN_MAX_STEPS": "4",
                                    "LANTERN_MAX_SAMPLES": "8", "LANTERN_MAX_QUEUE_DEPTH": "50"})
    try:
        s.start_api()
        s.start_worker()
        s.wait_workers(1)
        yield s
    finally:
        s.stop()


def test_generated_requests_never_5xx_and_errors_are_problems(fuzz_stack):
    auth = {"Authorization": f"Bearer {KEYS['acme']}"}
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json", headers=auth)
    seen: list[tuple[str, int]] = []
    bad: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10
    for op in operations:
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call(base_url=fuzz_stack.base_url, headers=auth, timeout=30)
            seen.append((op.label, response.status_code))
            ctype = response.headers.get("content-type", "")
            ctype = ctype[0] if isinstance(ctype, list) else ctype
            if response.status_code >= 500 and not (response.status_code == 503 and "problem+json" in ctype):
                bad.append(f"{op.label}: {response.status_code} {response.text[:300]}")
            elif 400 <= response.status_code < 600 and "application/problem+json" not in ctype:
                bad.append(f"{op.label}: {response.status_code} is not problem+json ({ctype})")

        run()
    assert not bad, bad[:10]
    assert len(seen) >= MIN_CASES, len(seen)
    assert sum(s >= 500 and s != 503 for _, s in seen) == 0
    assert sum(400 <= s < 500 for _, s in seen) > 100  # the fuzzer did reach the error paths

"""The OpenAPI spec fuzzed against a running server (schemathesis): never a 5xx.

Every operation of ``/openapi.json`` gets valid (positive) and invalid (negative) requests
generated from the spec; the server must answer each with a status below 500 and keep
serving. The cases are driven with hypothesis directly (the schemathesis pytest plugin
does not support this pytest version).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 40}


def test_no_generated_request_makes_the_server_fail(running_server: dict[str, Any]) -> None:
    url = running_server["url"]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/model", "/readyz"}
    calls = {"n": 0, "by_status": {}}
    for op in operations:
        for mode, n in EXAMPLES.items():
            if op.path != "/v1/predict" and mode is GenerationMode.NEGATIVE:
                continue  # nothing to make invalid in a GET without parameters
            examples = n if op.path == "/v1/predict" else 3

            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(base_url=url, timeout=10)
                calls["n"] += 1
                calls["by_status"][response.status_code] = \
                    calls["by_status"].get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.method, case.path, case.body,
                                                    response.text[:500])

            check()
    assert calls["n"] >= 60
    assert 200 in calls["by_status"] and 422 in calls["by_status"], calls
    assert running_server["replica"].ready

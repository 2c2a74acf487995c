"""Schemathesis against every operation of all four services, on the running platform.

Each operation is called with a valid token of a role allowed to call it (the authorisation
matrix's rule), with input that fits its OpenAPI document and input that does not, a bounded number
of examples each. Two checks: no server error, and every documented response matches its schema
(so the documents stay true: a refusal's `detail` is what the document says).
"""

from __future__ import annotations

import contextlib
import time

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from test_authorization_matrix import PUBLIC, RULES, _rule, _tokens

# Per operation and mode: about 440 calls, 60-120 s for the four services on a shared 2-core machine.
EXAMPLES = 5
CHECKS = [not_a_server_error, response_schema_conformance]


def _fuzz(service: str, base_url: str, tokens: dict, problems: list[str]) -> int:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        rule = _rule(service, (operation.method.upper(), operation.path))
        role = None if rule == PUBLIC else sorted(rule)[0]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            found: list[str] = []

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            def run(case) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=base_url, headers=tokens[role], timeout=15)
                try:
                    case.validate_response(response, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as exc:
                    if not found:
                        found.append(
                            f"{service} {operation.label} [{mode.value}] as {role or 'nobody'}: {str(exc)[:600]}"
                        )

            # Unsatisfiable: no input of this mode exists (e.g. no parameters at all to make invalid).
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                run()
            problems.extend(found)
    return calls


def test_no_server_error_and_no_response_outside_the_documents(platform, jwt_secret) -> None:
    tokens = _tokens(jwt_secret)
    problems: list[str] = []
    started = time.monotonic()
    calls = sum(_fuzz(service, platform.url(service), tokens, problems) for service in RULES)
    elapsed_s = time.monotonic() - started
    print(f"schemathesis: {calls} calls over {len(RULES)} services in {elapsed_s:.0f} s")
    assert problems == [], "\n\n".join(problems)

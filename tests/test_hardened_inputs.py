"""Malformed input never reaches a 5xx: every write endpoint, every kind of garbage, a clear 4xx."""

from __future__ import annotations

import httpx
from test_authorization_matrix import PUBLIC, _cells, _fill, _rule, _tokens

GARBAGE: dict[str, tuple[bytes, str]] = {
    "not json": (b"{not json", "application/json"),
    "json array": (b"[1, 2, 3]", "application/json"),
    "json null": (b"null", "application/json"),
    "wrong types": (
        b'{"service_id": 5, "needs": "x", "status": [], "amount_pence": "lots", "name": {}}',
        "application/json",
    ),
    "huge number": (b'{"amount_pence": 1' + b"0" * 400 + b', "capacity": 1e400}', "application/json"),
    "deep nesting": (b'{"a":' * 500 + b"1" + b"}" * 500, "application/json"),
    "bad utf-8": (b'{"name": "\xff\xfe"}', "application/json"),
    "form not json": (b"a=1&b=2", "application/x-www-form-urlencoded"),
    "text": (b"hello", "text/plain"),
}


async def test_no_write_endpoint_answers_garbage_with_a_server_error(platform, jwt_secret, monkeypatch) -> None:
    monkeypatch.setenv("SOCIALRX_PERSON_REF_KEY", "hardening-key-only-to-build-the-app-offline")
    tokens = _tokens(jwt_secret)
    problems: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:
        for service, method, path in _cells():
            if method not in ("POST", "PATCH"):
                continue
            rule = _rule(service, (method, path))
            role = next(r for r in tokens if r is not None and (rule == PUBLIC or r in rule))
            for name, (body, content_type) in GARBAGE.items():
                answer = await client.request(
                    method,
                    platform.url(service) + _fill(path),
                    content=body,
                    headers={**tokens[role], "Content-Type": content_type},
                )
                if not 400 <= answer.status_code < 500:
                    problems.append(f"{service} {method} {path} with {name}: {answer.status_code} {answer.text[:100]}")
                elif "detail" not in answer.json():
                    problems.append(f"{service} {method} {path} with {name}: no 'detail' in the refusal")
    assert problems == [], "\n".join(problems)


async def test_oversized_bodies_are_refused_before_they_are_read(platform, jwt_secret) -> None:
    link_worker = _tokens(jwt_secret)["link_worker"]
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            platform.url("referral-intake") + "/referrals",
            content=b"x" * 2_000_001,
            headers={**link_worker, "Content-Type": "application/json"},
        )
    assert answer.status_code == 413
    assert "larger than" in answer.json()["detail"]

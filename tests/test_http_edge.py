"""The shared HTTP edge of every service, over real HTTP against the running platform.

Body limits on the stream (not only Content-Length), authentication before the body is read, a
route's own larger limit, bounded paging, no NUL character into PostgreSQL, download names any
client can read, an OpenAPI document that says what really happens, and /docs that works offline.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from support import PCN, auth
from test_authorization_matrix import PUBLIC, _rule

LIMIT = 1_000_000


async def _chunks(total: int, size: int = 64 * 1024):
    # A generator body: httpx sends it chunked, with no Content-Length to refuse it by.
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


async def test_a_chunked_body_over_the_limit_is_refused_with_413(platform, jwt_secret) -> None:
    link_worker = auth(jwt_secret, "link_worker", pcn_id=PCN, practice_id="B82005")
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(
            platform.url("referral-intake") + "/referrals",
            content=_chunks(3 * LIMIT),
            headers={**link_worker, "Content-Type": "application/json"},
        )
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413, answer.text
    assert "larger than 1000000 bytes" in answer.json()["detail"]


@pytest.mark.parametrize("body", [b"{not json", b"x" * 5 * LIMIT])
async def test_an_unauthenticated_post_is_refused_before_its_body_is_parsed(platform, body) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for service, path in (
            ("referral-intake", "/referrals"),
            ("directory", "/organizations"),
            ("funding-ledger", "/agreements"),
            ("outcomes", f"/referrals/{uuid.uuid4()}/outcomes"),
        ):
            answer = await client.post(
                platform.url(service) + path,
                content=_chunks(len(body)) if len(body) > LIMIT else body,
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 401, (service, answer.status_code, answer.text[:200])
            assert answer.headers["www-authenticate"] == "Bearer"
        # The open routes stay open.
        for service in ("referral-intake", "directory", "outcomes", "funding-ledger"):
            assert (await client.get(platform.url(service) + "/healthz")).status_code == 200
        assert (await client.get(platform.url("directory") + "/services?per_page=5")).status_code == 200


def _remittance(size_bytes: int) -> bytes:
    lines = ["paid_on,organisation_id,amount_pence,reference"]
    n = 0
    while sum(len(line) + 1 for line in lines) < size_bytes:
        n += 1
        # A reference longer than 140 characters: a malformed line, reported without a query.
        lines.append(f"2026-05-01,org-none,{100 + n},REF-{n:06d}-" + "x" * 1000)
    return ("\n".join(lines) + "\n").encode()


async def test_the_reconciliation_upload_takes_its_documented_5_mb(platform, jwt_secret) -> None:
    finance = auth(jwt_secret, "finance", pcn_id=PCN)
    url = platform.url("funding-ledger") + "/reconciliation"
    two_mb = _remittance(2 * LIMIT)
    async with httpx.AsyncClient(timeout=120) as client:
        answer = await client.post(url, headers=finance, files={"file": ("remittance.csv", two_mb, "text/csv")})
        assert answer.status_code == 200, answer.text[:300]
        assert {line["status"] for line in answer.json()["lines"]} == {"malformed"}
        too_big = await client.post(
            url, headers=finance, files={"file": ("remittance.csv", b"x" * 6 * 1024 * 1024, "text/csv")}
        )
        assert too_big.status_code == 413
        other = await client.post(
            platform.url("funding-ledger") + "/settlements", headers=finance, content=b"{" + b" " * 2 * LIMIT + b"}"
        )
        assert other.status_code == 413  # the larger limit is that route's alone


HUGE_PAGE = "100000000000000000"


async def test_a_huge_page_number_is_a_clear_422_on_every_list(platform, jwt_secret) -> None:
    tokens = {
        "finance": auth(jwt_secret, "finance", pcn_id=PCN),
        "link_worker": auth(jwt_secret, "link_worker", pcn_id=PCN),
        "charity": auth(jwt_secret, "charity", organisation_id="org-paging"),
        None: {},
    }
    lists = [
        ("funding-ledger", "/payments", "finance"),
        ("referral-intake", "/referrals", "link_worker"),
        ("directory", "/organizations", None),
        ("directory", "/services", None),
        ("directory", "/service_at_locations", None),
        ("directory", "/taxonomy_terms", None),
        ("directory", "/inbox", "charity"),
    ]
    async with httpx.AsyncClient(timeout=15) as client:
        for service, path, role in lists:
            answer = await client.get(platform.url(service) + path, params={"page": HUGE_PAGE}, headers=tokens[role])
            assert answer.status_code == 422, (path, answer.status_code, answer.text[:200])
            assert answer.json()["detail"][0]["loc"] == ["query", "page"]
            assert HUGE_PAGE not in answer.text  # never echoed
            last = await client.get(platform.url(service) + path, params={"page": 100_000}, headers=tokens[role])
            assert last.status_code == 200, (path, last.text[:200])


async def test_a_nul_character_is_refused_naming_the_field_in_path_query_and_body(platform, jwt_secret) -> None:
    admin = auth(jwt_secret, "admin")
    cases = [
        ("GET", "referral-intake", "/referrals/%00", None, ["path", "referral_id"]),
        ("GET", "referral-intake", "/audit/contact-access?referral_id=%00", None, ["query", "referral_id"]),
        ("GET", "funding-ledger", "/statements/%00", None, ["path", "organisation_id"]),
        ("GET", "directory", "/organizations/x%00y", None, ["path", "organization_id"]),
        ("GET", "directory", "/services?search=a%00b", None, ["query", "search"]),
        ("POST", "directory", "/organizations", {"name": "Leeds\u0000Walkers"}, ["body", "name"]),
        (
            "POST",
            "funding-ledger",
            "/settlements",
            {"organisation_id": "o", "reference": ["ok", "b\u0000d"]},
            ["body", "reference", 1],
        ),
    ]
    async with httpx.AsyncClient(timeout=15) as client:
        for method, service, path, body, loc in cases:
            headers = auth(jwt_secret, "finance", pcn_id=PCN) if path == "/settlements" else admin
            answer = await client.request(method, platform.url(service) + path, json=body, headers=headers)
            assert answer.status_code == 422, (path, answer.status_code, answer.text[:200])
            assert answer.json()["detail"] == [
                {"loc": loc, "msg": "must not contain the NUL character (U+0000)", "type": "string_nul"}
            ]


async def test_a_statement_of_an_organisation_with_a_non_latin_1_id_downloads(platform, jwt_secret) -> None:
    admin = auth(jwt_secret, "admin")
    async with httpx.AsyncClient(timeout=15) as client:
        answer = await client.get(
            platform.url("funding-ledger") + "/statements/%F0%B3%8E%92caf%C3%A9",
            params={"format": "csv"},
            headers=admin,
        )
    assert answer.status_code == 200, answer.text[:200]
    disposition = answer.headers["content-disposition"]
    assert disposition.isascii()
    assert 'filename="statement-_caf_-' in disposition
    assert "filename*=UTF-8''statement-%F0%B3%8E%92caf%C3%A9-" in disposition


async def test_the_openapi_documents_say_who_may_call_and_what_refusals_look_like(platform) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        for service in ("referral-intake", "directory", "outcomes", "funding-ledger"):
            document = (await client.get(platform.url(service) + "/openapi.json")).json()
            assert document["components"]["securitySchemes"]["bearerAuth"] == {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
            }
            detail = document["components"]["schemas"]["Error"]["properties"]["detail"]
            assert {"type": "string"} in detail["anyOf"]
            for path, operations in document["paths"].items():
                for method, operation in operations.items():
                    responses = operation["responses"]
                    for code in set(responses) & {"401", "403", "404", "409", "413", "422"}:
                        assert responses[code]["content"]["application/json"]["schema"] == {
                            "$ref": "#/components/schemas/Error"
                        }, (service, method, path, code)
                    if _rule(service, (method.upper(), path)) == PUBLIC:  # the authorisation matrix decides
                        assert "security" not in operation, (service, method, path)
                    else:
                        assert operation["security"] == [{"bearerAuth": []}], (service, method, path)
                        assert {"401", "403"} <= set(responses), (service, method, path)
        ledger = (await client.get(platform.url("funding-ledger") + "/openapi.json")).json()
    assert "413" in ledger["paths"]["/reconciliation"]["post"]["responses"]
    assert "404" in ledger["paths"]["/statements/{organisation_id}"]["get"]["responses"]


async def test_docs_load_swagger_ui_from_the_service_itself(platform) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        for service in ("referral-intake", "directory", "outcomes", "funding-ledger"):
            base = platform.url(service)
            page = await client.get(base + "/docs")
            assert page.status_code == 200
            referenced = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", page.text)
            urls = [a or b for a, b in referenced]
            assert urls and all(u.startswith("/") for u in urls), urls  # nothing from a CDN
            for url in urls:
                asset = await client.get(base + url)
                assert asset.status_code == 200, url
            assert "SwaggerUIBundle" in (await client.get(base + "/docs/assets/swagger-ui-bundle.js")).text


async def test_a_remittance_holding_a_nul_character_is_refused_not_a_server_error(platform, jwt_secret) -> None:
    finance = auth(jwt_secret, "finance", pcn_id=PCN)
    csv_with_nul = b"paid_on,organisation_id,amount_pence,reference\n2026-05-01,org-\x00x,100,REF\x00-1\n"
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            platform.url("funding-ledger") + "/reconciliation",
            headers=finance,
            files={"file": ("remittance.csv", csv_with_nul, "text/csv")},
        )
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["detail"][0]["loc"] == ["body", "file"]

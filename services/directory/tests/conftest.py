"""Shared pieces of the directory's tests: ORUK schema validators, a local webhook receiver, events."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import socialrx_directory
from socialrx_harness.testing import publish_event
from socialrx_shared import events as ev

STANDARD = Path(socialrx_directory.__file__).parent / "standards" / "oruk-hsds-3.0"
# The standard's openapi.json refers to its schemas by these URLs: they resolve to our local copies.
RAW = "https://raw.githubusercontent.com/openreferral/uk-profile/main/"
OPENAPI = "urn:oruk:openapi"
PAGE_KEYS = {"total_items", "total_pages", "page_number", "size", "first_page", "last_page", "empty", "contents"}


def _registry() -> Registry:
    resources = []
    for file in (STANDARD / "schema").rglob("*.json"):
        uri = OPENAPI if file.name == "openapi.json" else RAW + file.relative_to(STANDARD).as_posix()
        resources.append((uri, Resource.from_contents(json.loads(file.read_text()), default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def _pointer(path: str) -> str:
    return (
        "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/get/responses/200/content/application~1json/schema"
    )


def _page_of(item_ref: str) -> dict:
    return {
        "allOf": [{"$ref": OPENAPI + "#/components/schemas/Page"}],
        "properties": {"contents": {"type": "array", "items": {"$ref": item_ref}}},
    }


# Each endpoint's response schema, from the standard's openapi.json where it defines the path.
SCHEMAS = {
    "/": {"$ref": OPENAPI + _pointer("/")},
    "/services": {"$ref": OPENAPI + _pointer("/services")},
    "/services/{id}": {"$ref": OPENAPI + _pointer("/services/{id}")},
    "/taxonomies": {"$ref": OPENAPI + _pointer("/taxonomies")},
    "/taxonomies/{id}": {"$ref": OPENAPI + _pointer("/taxonomies/{id}")},
    "/taxonomy_terms": {"$ref": OPENAPI + _pointer("/taxonomy_terms")},
    "/taxonomy_terms/{id}": {"$ref": OPENAPI + _pointer("/taxonomy_terms/{id}")},
    "/service_at_locations": {"$ref": OPENAPI + _pointer("/service_at_locations")},
    # openapi.json names compiled/service.json here, evidently a slip: the resource is a service_at_location.
    "/service_at_locations/{id}": {"$ref": RAW + "schema/compiled/service_at_location.json"},
    # Not in openapi.json: the compiled organization schemas the standard ships.
    "/organizations": _page_of(RAW + "schema/compiled/organization_list.json"),
    "/organizations/{id}": {"$ref": RAW + "schema/compiled/organization.json"},
}


def assert_oruk_valid(endpoint: str, body: dict) -> None:
    validator = Draft202012Validator(SCHEMAS[endpoint], registry=REGISTRY, format_checker=FormatChecker())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{endpoint} does not validate: {errors[:5]}"
    if "contents" in body or endpoint in (
        "/services",
        "/taxonomies",
        "/taxonomy_terms",
        "/service_at_locations",
        "/organizations",
    ):
        assert set(body) >= PAGE_KEYS, f"{endpoint} lacks page keys {PAGE_KEYS - set(body)}"


@pytest.fixture
def oruk_valid():
    return assert_oruk_valid


def example(name: str) -> dict:
    return json.loads((STANDARD / "examples" / name).read_text())


class Receiver:
    """A real local HTTP endpoint that verifies signatures and can fail its first N calls."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.secret: str | None = None
        self.fail_first = fail_first
        self.delay_s = delay_s  # a slow receiver: it answers only after this long
        self.arrived_at: list[float] = []  # time.monotonic() of each call's arrival
        self.calls: list[dict] = []  # every request, as received
        self.accepted: list[dict] = []  # events it answered 2xx to
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.handle(dict(self.headers), body, self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, headers: dict, body: bytes, handler: BaseHTTPRequestHandler) -> None:
        self.arrived_at.append(time.monotonic())
        if self.delay_s:
            # Slow the way that defeats a per-read timeout: an answer trickled out a byte at a time.
            self.calls.append({"event": json.loads(body), "signature_valid": None, "headers": headers})
            answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
            try:
                for byte in answer:
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    time.sleep(self.delay_s / len(answer))
            except OSError:
                pass  # the caller gave up, as it should
            handler.close_connection = True
            return
        timestamp = headers.get("X-Socialrx-Timestamp", "")
        expected = (
            "v1=" + hmac.new((self.secret or "").encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        valid = hmac.compare_digest(expected, headers.get("X-Socialrx-Signature", ""))
        event = json.loads(body)
        self.calls.append({"event": event, "signature_valid": valid, "headers": headers})
        status = 401 if not valid else (500 if len(self.calls) <= self.fail_first else 204)
        if status == 204:
            self.accepted.append(event)
        handler.send_response(status)
        handler.end_headers()

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


async def publish(bootstrap: str, spec: ev.EventSpec, data: ev.Strict) -> ev.Envelope:
    return await publish_event(bootstrap, spec, data)


@pytest.fixture
def kit():
    """The helpers above, for test modules (importlib import mode cannot import conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(Receiver=Receiver, publish=publish, example=example, oruk_valid=assert_oruk_valid)


@pytest.fixture(scope="module")
def rules_database(postgres) -> str:
    """One directory database per test module for handler-rule tests; each test's changes are rolled back."""
    return postgres.new_database("dir_rules")


@pytest.fixture
async def handlers(rules_database: str, jwt_secret: str):
    """The directory's event handlers on the real PostgreSQL, in a transaction rolled back after the test
    (no Kafka): for the rules of how the directory reacts to an event. Delivery is tested through Kafka."""
    from socialrx_directory.app import Settings, build
    from socialrx_harness.testing import handler_bench

    async with handler_bench(build, Settings, database_url=rules_database, jwt_secret=jwt_secret) as bench:
        yield bench

"""Calls to the four services' HTTP APIs, always with the signed-in person's own token.

The services stay the authority on who may do what: an API's 403 becomes a 403 page here, and the
web app never adds a token or a scope of its own.
"""

from __future__ import annotations

from typing import Any

import httpx

from .session import User


class ApiError(Exception):
    """An API said no (4xx), or could not be reached (status 502)."""

    def __init__(self, status: int, detail: Any, service: str) -> None:
        super().__init__(f"{service}: {status}")
        self.status = status
        self.detail = detail
        self.service = service

    @property
    def message(self) -> str:
        detail = self.detail
        if isinstance(detail, dict):
            detail = detail.get("message") or detail.get("detail") or ""
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg', 'invalid')}"
                for e in detail
                if isinstance(e, dict)
            )
        return str(detail or "")


class Apis:
    """One httpx.AsyncClient per service, opened with the app and closed with it."""

    def __init__(self, urls: dict[str, str], timeout_s: float) -> None:
        self.clients = {name: httpx.AsyncClient(base_url=url, timeout=timeout_s) for name, url in urls.items()}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def call(self, user: User | None, service: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer {user.token}"
        try:
            response = await self.clients[service].request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                502, f"the {service} service did not answer ({type(exc).__name__}); try again shortly", service
            ) from None
        if response.status_code >= 500:
            raise ApiError(
                502, f"the {service} service had a problem (HTTP {response.status_code}); try again shortly", service
            )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            raise ApiError(response.status_code, detail, service)
        return response

    async def json(self, user: User | None, service: str, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.call(user, service, method, path, **kwargs)
        return response.json() if response.content else None

    async def get(self, user: User | None, service: str, path: str, **params: Any) -> Any:
        return await self.json(
            user, service, "GET", path, params={k: v for k, v in params.items() if v not in (None, "")}
        )

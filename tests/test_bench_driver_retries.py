"""The bench's driver treats a dropped connection as a real client would: it retries, and the retry
cannot double an effect (an Idempotency-Key on creates; an accept or outcome whose first attempt took
effect is done, not failed). Against the real services: each step's first answer is lost after the
service acted, exactly as when a keep-alive connection drops before the response arrives."""

from __future__ import annotations

import httpx

from socialrx_bench.bench_driver import Driver, make_world
from socialrx_harness.postgres import SERVICES
from socialrx_harness.testing import wait_for

STEPS = ("referrals", "accept", "outcomes")


class LosesFirstAnswer(httpx.AsyncBaseTransport):
    """Forwards every request to the real service; the first successful answer of each step is read
    and then lost (httpx.RemoteProtocolError), so the effect happened but the client never heard."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        step = request.url.path.rsplit("/", 1)[-1]
        if request.method == "POST" and step in STEPS and step not in self.lost and response.status_code in (200, 201):
            self.lost.add(step)  # before any await: one lost answer per step, whatever runs concurrently
            await response.aread()
            await response.aclose()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_lost_answer_is_retried_without_doubling_the_effect(platform, jwt_secret) -> None:
    transport = LosesFirstAnswer()
    urls = {service: platform.url(service) for service in SERVICES}
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        world = await make_world(client, urls, jwt_secret, organisations=1)
        result = await Driver(client, world, workers=2).run("lost answers", 3)

        assert transport.lost == set(STEPS)
        assert result.errors == {}
        assert len(result.referral_ids) == len(set(result.referral_ids)) == 3
        assert result.retries_connection == 3  # one lost answer per step
        assert result.retries_already_done == 2  # the accept and the outcome had taken effect
        listed = (await client.get(urls["referral-intake"] + "/referrals", headers=world.link_worker)).json()
        assert sorted(item["id"] for item in listed["items"]) == sorted(result.referral_ids)  # none made twice

        async def two_payments_each():
            answer = await client.get(urls["funding-ledger"] + "/payments?per_page=500", headers=world.finance)
            items = answer.json()["items"] if answer.status_code == 200 else []
            return items if len(items) >= 6 else None

        payments = await wait_for(two_payments_each, timeout_s=60, what="two payments per lifecycle")
        assert sorted(p["referral_id"] for p in payments) == sorted(2 * result.referral_ids)

"""kopf's API requests (its watches and lists) outlast an API outage of any length.

kopf retries a failed request once per delay in ``settings.networking.error_backoffs``
and then escalates; an escalated error ends that resource's watcher for good while the
operator process runs on. These tests drive kopf's own request routine against a real
HTTP server on loopback that answers 503 (what kube-apiserver answers while its etcd is
gone) for longer than the old bounded list (28 delays, ~55 s) allowed.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from kopf._cogs.clients import api, auth, errors
from kopf._cogs.structs import credentials

from its_operator import main

log = logging.getLogger(__name__)
FAILURES = 100  # more than any bounded list the operator ever shipped (28)


class FlakyServer:
    """Answers 503 to the first ``failures`` requests, then 200 with a list body."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.failures:
            return web.json_response(
                {"kind": "Status", "code": 503, "message": "etcdserver: request timed out"},
                status=503,
            )
        return web.json_response({"kind": "List", "items": []})


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[FlakyServer, str]]:
    server = FlakyServer(FAILURES)
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _get(url: str, backoffs: object) -> aiohttp.ClientResponse:
    settings = main.settings_for(argparse.Namespace())
    settings.networking.error_backoffs = backoffs  # type: ignore[assignment]
    context = auth.APIContext(credentials.ConnectionInfo(server=url))
    try:
        response: aiohttp.ClientResponse = await api.request(
            "get",
            "/apis/its.ai/v1alpha1/analyticspipelines",
            settings=settings,
            logger=log,
            context=context,
        )
        return response
    finally:
        await context.session.close()


async def test_a_request_outlasts_a_long_outage_and_returns_the_answer(
    flaky: tuple[FlakyServer, str],
) -> None:
    server, url = flaky
    response = await _get(url, main.UnboundedBackoffs(first_s=0.001, every_s=0.001))
    assert response.status == 200
    assert server.requests == FAILURES + 1


async def test_a_bounded_list_escalates_as_the_operator_once_did(
    flaky: tuple[FlakyServer, str],
) -> None:
    """The failure the unbounded delays prevent: the same outage, the old list's shape."""
    server, url = flaky
    with pytest.raises(errors.APIServerError):
        await _get(url, (0.001,) * 28)
    assert server.requests == 29


def test_the_operator_retries_for_ever_at_a_few_seconds_apart() -> None:
    backoffs = main.settings_for(argparse.Namespace()).networking.error_backoffs
    assert isinstance(backoffs, main.UnboundedBackoffs)
    first = list(itertools.islice(backoffs, 10_000))
    assert len(first) == 10_000
    assert first[0] == 1.0
    assert max(first) == 2.0
    # Each request gets its own sequence from the start.
    assert list(itertools.islice(backoffs, 3)) == first[:3]

"""Status page access over HTTP: failed logins and bearer guesses are throttled (429 + Retry-After), logged without
the secret, and every action needs its CSRF token."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import structlog
from freezegun import freeze_time
from pydantic import SecretStr

from delivery_daemon.status.auth import SESSION_COOKIE
from tests.support.stack import Stack
from tests.support.status_helpers import PASSWORD, TOKEN, StatusPage, csrf_of, dead_order, delivered_order, status_page

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]
OTHER_ADDRESS = "127.0.0.2"
"""A second loopback address, so one test can be two clients to the throttle."""


def _events(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [
        event
        for line in stack.logs.getvalue().splitlines()
        if line.startswith("{")
        for event in [json.loads(line)]
        if event.get("event") == name
    ]


async def _login_from(page: StatusPage, client: httpx.AsyncClient, password: str) -> httpx.Response:
    form = await client.get(f"{page.url}/login")
    return await client.post(
        f"{page.url}/login", data={"csrf_token": csrf_of(form.text), "password": password, "next": "/status/"}
    )


def _other_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=OTHER_ADDRESS), timeout=30)


async def test_wrong_passwords_throttle_their_client_until_the_window_passes(stack: Stack) -> None:
    """After login_failures wrong passwords even the right one gets 429 with Retry-After, for that address only."""
    async with (
        status_page(stack, login_failures=2, login_failures_global=10, login_window=900) as page,
        _other_client() as other,
    ):
        for _ in range(2):
            assert (await page.login("wrong-guess-123")).status_code == 401
        throttled = await page.login(PASSWORD)
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "900"
        assert "Too many failed logins" in throttled.text
        assert (await page.client.get(f"{page.url}/")).status_code == 303  # no session was granted
        assert (await _login_from(page, other, PASSWORD)).status_code == 303  # another address may log in
        stack.clock.advance(900)
        assert (await page.login(PASSWORD)).status_code == 303
    failed = _events(stack, "status.login_failed")
    assert [(e["client"], e["via"], e["failures"]) for e in failed] == [
        ("127.0.0.1", "form", 1),
        ("127.0.0.1", "form", 2),
    ]
    [throttled_event] = _events(stack, "status.login_throttled")
    assert (throttled_event["scope"], throttled_event["retry_after"]) == ("client", 900)
    assert "wrong-guess-123" not in stack.logs.getvalue() and PASSWORD not in stack.logs.getvalue()


async def test_failures_from_all_clients_count_towards_the_global_limit(stack: Stack) -> None:
    """``login_failures_global`` failures from any addresses throttle every address, yet a session keeps working."""
    async with status_page(stack, login_failures=5, login_failures_global=3) as page, _other_client() as other:
        assert (await page.login()).status_code == 303  # logged in before the attack
        for client in (page.client, page.client, other):
            assert (await _login_from(page, client, "wrong-guess")).status_code == 401
        refused = await _login_from(page, other, PASSWORD)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert (await page.client.get(f"{page.url}/orders")).status_code == 200  # the session is not locked out
    assert _events(stack, "status.login_throttled")[-1]["scope"] == "global"


async def test_bearer_token_guesses_count_as_failed_logins(stack: Stack) -> None:
    """Wrong bearer tokens are counted like wrong passwords; once throttled, the right token and form get 429."""
    async with status_page(stack, login_failures=3) as page:
        for guess in ("guess-1", "guess-2", "guess-3"):
            wrong = await page.client.get(f"{page.url}/orders", headers={"Authorization": f"Bearer {guess}"})
            assert wrong.status_code == 401
        right = await page.client.get(f"{page.url}/orders", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 429
        assert right.json() == {"error": "too many failed logins; try again later"}
        assert right.headers["retry-after"] == "900"
        assert (await page.login()).status_code == 429
    assert [e["via"] for e in _events(stack, "status.login_failed")] == ["bearer"] * 3
    assert "guess-1" not in stack.logs.getvalue() and TOKEN not in stack.logs.getvalue()


class _CountedToken(SecretStr):
    """The configured status token, counting its reads: the page reads it once per comparison with a bearer token."""

    def __init__(self, secret_value: str) -> None:
        super().__init__(secret_value)
        self.reads = 0

    def get_secret_value(self) -> str:
        self.reads += 1
        return super().get_secret_value()


async def test_each_bearer_request_compares_its_token_once(stack: Stack) -> None:
    """A bearer request's token is compared once (guard, CSRF and page share it); a wrong one counts one failure."""
    dead = await stack.job(await dead_order(stack))
    token = _CountedToken(TOKEN)
    right, wrong = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer guess-1"}
    async with status_page(stack, token=token) as page:
        requests = [  # each with what the old code also compared the token for
            (page.client.build_request("GET", f"{page.url}/orders", headers=right), 200),  # the page
            (page.client.build_request("POST", f"{page.url}/orders/{dead.id}/retry", headers=right), 303),  # CSRF
            (
                page.client.build_request("POST", f"{page.url}/logout", headers=right, data={"pad": "x" * 9000}),
                413,
            ),  # the error page
            (page.client.build_request("GET", f"{page.url}/orders", headers=wrong), 401),
        ]
        for request, status in requests:
            token.reads = 0
            response = await page.client.send(request)
            assert (response.status_code, token.reads) == (status, 1), request.url
    assert [(e["via"], e["failures"]) for e in _events(stack, "status.login_failed")] == [("bearer", 1)]
    assert (await stack.job(dead.order_id)).state == "queued"


async def test_login_routes_ignore_a_bearer_token(stack: Stack) -> None:
    """GET and POST /login answer alike with a right, a wrong or no bearer token, never compare it, and need CSRF."""
    token = _CountedToken(TOKEN)
    async with status_page(stack, token=token) as page:
        await page.client.get(f"{page.url}/login")  # the session's CSRF token, the same in every answer below
        token.reads = 0
        answers = []
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer guess-1"}):
            form = await page.client.get(f"{page.url}/login", headers=headers)
            post = await page.client.post(
                f"{page.url}/login", headers=headers, data={"password": PASSWORD, "next": "/status/"}
            )  # no csrf_token
            answers.append([(form.status_code, form.text), (post.status_code, post.text)])
        assert answers[1] == answers[2] == answers[0]
        [(form_status, form_text), (post_status, _)] = answers[0]
        assert (form_status, post_status) == (200, 403)
        assert "Log out" not in form_text
        assert token.reads == 0
        assert (await page.client.get(f"{page.url}/")).status_code == 303  # no session was granted
    assert _events(stack, "status.login_failed") == []


async def test_wrong_bearer_tokens_beside_a_session_are_throttled(stack: Stack) -> None:
    """Wrong bearer tokens beside a session are 401 and counted until 429; the session alone keeps working."""
    dead = await stack.job(await dead_order(stack))
    right = {"Authorization": f"Bearer {TOKEN}"}
    async with status_page(stack, login_failures=3) as page:
        assert (await page.login()).status_code == 303
        assert (await page.client.get(f"{page.url}/orders", headers=right)).status_code == 200
        csrf = await page.csrf()
        for guess in ("guess-1", "guess-2"):
            wrong = await page.client.get(f"{page.url}/orders", headers={"Authorization": f"Bearer {guess}"})
            assert (wrong.status_code, wrong.json()) == (401, {"error": "a valid bearer token is required"})
        action = await page.client.post(
            f"{page.url}/orders/{dead.id}/retry", headers={"Authorization": "Bearer guess-3"}, data={"csrf_token": csrf}
        )
        assert (action.status_code, action.json()) == (401, {"error": "a valid bearer token is required"})
        throttled = await page.client.get(f"{page.url}/orders", headers=right)
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "900")
        assert (await page.client.get(f"{page.url}/orders")).status_code == 200  # the session is not locked out
    assert [(e["via"], e["failures"]) for e in _events(stack, "status.login_failed")] == [
        ("bearer", 1),
        ("bearer", 2),
        ("bearer", 3),
    ]
    assert (await stack.job(dead.order_id)).state == "dead"


async def test_a_session_cookie_is_refused_once_session_max_age_has_passed(stack: Stack) -> None:
    """The session cookie's signature carries the time of signing (itsdangerous, read from the wall clock, frozen
    here) and the server refuses it after ``session_max_age``: a copy of the cookie replayed by a client that
    ignores its Max-Age logs nobody in one second after the limit, though it still did one second before."""
    # real_asyncio: the event loop (and so the servers and the client) keeps the real monotonic clock
    with freeze_time("2027-01-15 08:00:00", real_asyncio=True) as frozen:
        async with status_page(stack, session_max_age=3600) as page, httpx.AsyncClient(timeout=30) as replayer:
            assert (await page.login()).status_code == 303
            replayed = {"Cookie": f"{SESSION_COOKIE}={page.client.cookies[SESSION_COOKIE]}"}  # no jar: no expiry
            frozen.tick(timedelta(seconds=3599))
            assert (await replayer.get(f"{page.url}/orders", headers=replayed)).status_code == 200
            frozen.tick(timedelta(seconds=2))
            refused = await replayer.get(f"{page.url}/orders", headers=replayed)
            assert refused.status_code == 303 and refused.headers["location"].endswith("/login?next=/status/orders")


async def test_every_action_needs_its_csrf_token(stack: Stack) -> None:
    """Logout, retry and redeliver each refuse a POST with a missing or forged token (403) and change nothing."""
    dead = await stack.job(await dead_order(stack))
    delivered = await stack.job(await delivered_order(stack))
    async with status_page(stack) as page:
        await page.login()
        actions = ["/logout", f"/orders/{dead.id}/retry", f"/orders/{delivered.id}/redeliver"]
        for path in actions:
            for form in ({}, {"csrf_token": "forged"}):
                response = await page.client.post(f"{page.url}{path}", data=form)
                assert response.status_code == 403, (path, form)
        assert (await page.client.get(f"{page.url}/")).status_code == 200  # still logged in
    assert (await stack.job(dead.order_id)).state == "dead"
    assert (await stack.job(delivered.order_id)).state == "delivered"


async def test_status_secrets_are_redacted_from_logs(make_stack: MakeStack) -> None:
    """The status password, token and session secret are scrubbed from any log line that would carry them."""
    secrets = {"password": "status-password-xyz", "token": "status-token-xyz", "session_secret": "status-session-xyz"}
    async with make_stack(admin={"port": 0}, status={"enabled": True, **secrets}) as stack:
        structlog.get_logger("test").warning("probe", text=" ".join(secrets.values()))
        logged = stack.logs.getvalue()
    assert "probe" in logged
    assert not [name for name, value in secrets.items() if value in logged]

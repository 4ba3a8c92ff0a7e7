"""The adapter seam's helpers: ``same_origin``'s unparsed fast path agrees with parsing the URL; ``ApiClient.call``
sends what ``request`` would, straight through the (pinned) transport, and skips building an httpx.Request only for
URLs httpx would leave as they are."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_daemon.marketplaces.base import _AS_WRITTEN, ApiClient, PinnedOrigin, same_origin
from delivery_daemon.net.guard import BlockedDestination
from delivery_daemon.order import usable_url

BASES = [
    "http://127.0.0.1:8000/api/v1",
    "https://api.example.com/api",
    "https://API.example.com:443/v2",
    "http://[::1]:9/a",
]


def parsed_same_origin(url: str, base: str) -> bool:
    """The reference: both URLs parsed by httpx, scheme, host and port compared."""
    try:
        a = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    b = httpx.URL(base)
    return bool(a.host) and (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/api/v1/orders/delivery/abc",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000@evil.example/x",
        "http://127.0.0.1:8000\\@evil.example/x",
        "http://127.0.0.1:80000/x",
        "http://127.0.0.1:8001/x",
        "https://127.0.0.1:8000/x",
        "http://127.0.0.1:8000/a b",
        "http://127.0.0.1:8000/\x00",
        "HTTP://127.0.0.1:8000/x",
        "http://127.0.0.1.evil.example:8000/x",
        "//127.0.0.1:8000/x",
    ],
)
def test_tricky_urls_judged_as_parsing_would(url: str) -> None:
    """Userinfo tricks, other ports and schemes, spaces and control characters: the same answer as parsing."""
    base = BASES[0]
    assert same_origin(url, base) == parsed_same_origin(url, base)


@given(base=st.sampled_from(BASES), suffix=st.text(max_size=40))
def test_fast_path_agrees_with_parsing(base: str, suffix: str) -> None:
    """For any text after the store's ``scheme://authority/``, same_origin answers as parsing both URLs does."""
    prefix = str(httpx.URL(base).copy_with(path="/", query=None, fragment=None))
    url = prefix + suffix
    assert same_origin(url, base) == parsed_same_origin(url, base)


@given(url=st.from_regex(r"\Ahttps?://[A-Za-z0-9.\-\[\]:@% é]{0,12}(:[0-9]{0,6})?([/?#][ -~\x7f]{0,30})?\Z"))
def test_usable_url_fast_path_agrees_with_parsing(url: str) -> None:
    """``usable_url`` answers as parsing with httpx does, whether or not it took its no-parse fast path."""
    try:
        parsed = httpx.URL(url)
        expected = parsed.scheme in ("http", "https") and bool(parsed.host)
    except (httpx.InvalidURL, TypeError, ValueError):
        expected = False
    assert usable_url(url) == expected


def _client(seen: list[httpx.Request], base: str = "http://127.0.0.1:8000/api/v1") -> ApiClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True}, headers={"Set-Cookie": "session=abc; Path=/"})

    return ApiClient(
        transport=PinnedOrigin(httpx.MockTransport(answer), base),
        base_url=base,
        timeout=7.5,
        headers={"User-Agent": "delivery-daemon"},
    )


async def test_call_sends_what_request_would_with_the_body_read() -> None:
    """A path joins the base URL, default and given headers both go, a JSON body is encoded, the timeout is the
    client's, and the answer's body is read; no cookie from an answer is sent back."""
    seen: list[httpx.Request] = []
    async with _client(seen) as client:
        first = await client.call(
            "POST", "/orders/delivery/abc", headers={"Authorization": "Bearer t"}, json={"text": "K"}
        )
        await client.call("GET", "http://127.0.0.1:8000/api/v1/orders/info/1")
        requested = await client.request("GET", "/orders/info/1")
    assert first.json() == {"ok": True}
    sent = seen[0]
    assert str(sent.url) == "http://127.0.0.1:8000/api/v1/orders/delivery/abc"
    assert sent.headers["User-Agent"] == "delivery-daemon" and sent.headers["Authorization"] == "Bearer t"
    assert sent.headers["Content-Type"] == "application/json" and sent.content == b'{"text":"K"}'
    assert sent.extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}
    assert "cookie" not in seen[1].headers
    assert (str(seen[1].url), seen[1].extensions["timeout"]) == (
        str(requested.request.url),
        seen[2].extensions["timeout"],
    )


async def test_call_keeps_the_origin_pin() -> None:
    """A URL on another host is refused by the pinned transport before anything is sent."""
    seen: list[httpx.Request] = []
    async with _client(seen) as client:
        with pytest.raises(BlockedDestination):
            await client.call("POST", "http://evil.example/api/v1/orders/delivery/abc", json={})
    assert seen == []


@given(base=st.sampled_from(BASES), rest=st.text(alphabet="az09/.%?#:@!$&'()*+,;=-_~[] é\\", max_size=30))
def test_urls_taken_as_written_are_what_httpx_writes(base: str, rest: str) -> None:
    """Whatever ``call`` sends without parsing (the base URL as httpx writes it, then what ``_AS_WRITTEN``
    accepts) is a URL httpx would send unchanged."""
    prefix = str(httpx.URL(base)).rstrip("/")
    url = f"{prefix}/{rest}"
    if _AS_WRITTEN.fullmatch(url, len(prefix)):
        assert str(httpx.URL(url)) == url


class Recording(httpx.AsyncBaseTransport):
    """A transport that can also send plain values (as the aiohttp one can), recording which way each came."""

    def __init__(self) -> None:
        self.ways: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.ways.append(("request", str(request.url)))
        return httpx.Response(200, json={"ok": True})

    async def send_read(
        self, method: str, url: str, headers: object, body: bytes | None, timeouts: object
    ) -> httpx.Response:
        self.ways.append(("send_read", url))
        return httpx.Response(200, json={"ok": True})


@pytest.mark.parametrize(
    ("url", "way"),
    [
        ("/orders/info/abc123", "send_read"),
        ("http://127.0.0.1:8000/api/v1/orders/delivery/tok-EN_~1?x=1", "send_read"),
        ("/orders/info/a%2Fb", "request"),
        ("/orders/../info/1", "request"),
        ("/orders/info/é", "request"),
        ("http://127.0.0.1:8000/other/orders/1", "request"),
        ("HTTP://127.0.0.1:8000/api/v1/orders/1", "request"),
    ],
)
async def test_call_builds_a_request_only_when_the_url_needs_httpx(url: str, way: str) -> None:
    """A URL under the base URL as httpx writes it goes to the transport's send_read; anything httpx would
    rewrite (escapes, dot segments, non-ASCII, another path or spelling of the origin) goes as an httpx.Request."""
    base = "http://127.0.0.1:8000/api/v1"
    transport = Recording()
    async with ApiClient(transport=PinnedOrigin(transport, base), base_url=base, timeout=5, headers={}) as client:
        assert (await client.call("GET", url)).json() == {"ok": True}
    assert [w for w, _ in transport.ways] == [way]


async def test_pinned_send_read_still_refuses_other_origins() -> None:
    """Through send_read too, the pinned transport sends nothing to a host other than the store's."""
    transport = Recording()
    pinned = PinnedOrigin(transport, "http://127.0.0.1:8000/api/v1")
    with pytest.raises(BlockedDestination):
        await pinned.send_read("GET", "http://127.0.0.1:8001/api/v1/orders/1", {}, None, {})
    with pytest.raises(BlockedDestination):
        await pinned.send_read("GET", "http://127.0.0.1:8000@evil.example/api/v1/orders/1", {}, None, {})
    assert transport.ways == []

"""The adapter seam's helpers: ``same_origin``'s unparsed fast path agrees with parsing the URL."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_daemon.marketplace import same_origin

BASES = ["http://127.0.0.1:8000/api/v1", "https://api.example.com/api", "https://API.example.com:443/v2",
         "http://[::1]:9/a"]


def parsed_same_origin(url: str, base: str) -> bool:
    """The reference: both URLs parsed by httpx, scheme, host and port compared."""
    try:
        a = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    b = httpx.URL(base)
    return bool(a.host) and (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


@pytest.mark.parametrize("url", [
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
])
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

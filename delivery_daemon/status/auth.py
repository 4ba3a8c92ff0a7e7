"""Who may see the status page, and that every action was meant: login, the session cookie and CSRF tokens.

A browser logs in with the configured password (or the token) and gets a session cookie signed by Starlette's
``SessionMiddleware`` (itsdangerous), ``SameSite=Strict`` and ``HttpOnly``. Scripts may instead send
``Authorization: Bearer <token>`` (on every route but the login form, which ignores it). Wrong passwords and
tokens are counted by :mod:`.throttle`. Every POST form carries a ``csrf_token`` that must equal the one stored in
the signed session (the synchronizer-token pattern), including the login form itself, so a foreign page can neither
act for a logged-in seller nor log the browser into a session of its own. Bearer requests carry no cookie a
foreign page could ride on, so they need no CSRF token.

The routes decide once per request how it is authenticated and :func:`record` that on the request; the CSRF check
(:func:`csrf_ok`) and the page read it back with :func:`authenticated` instead of comparing the token again.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Literal
from urllib.parse import parse_qsl

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

from delivery_daemon.config import StatusSettings
from delivery_daemon.errors import BodyTooLarge

SESSION_COOKIE = "delivery_daemon_status"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 8 * 1024
"""The largest form body accepted; the page's forms are a few short fields."""
_STATE_KEY = "status_auth"
"""The ``request.state`` attribute :func:`record` writes."""

Via = Literal["session", "bearer"]
"""How a request is authenticated: by a logged-in session cookie, or by a right bearer token."""


def session_middleware(settings: StatusSettings) -> Middleware:
    """The signed-cookie session; a random signing key when ``status.session_secret`` is not configured."""
    secret = settings.session_secret.get_secret_value() if settings.session_secret else secrets.token_urlsafe(32)
    return Middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age,
        same_site="strict",
        https_only=False,
    )


def _matches(supplied: str, expected: str) -> bool:
    return hmac.compare_digest(supplied.encode(), expected.encode())


def secret_accepted(settings: StatusSettings, supplied: str) -> bool:
    """True when ``supplied`` equals the configured password or token (constant-time comparisons)."""
    accepted = False
    for configured in (settings.password, settings.token):
        if configured is not None and configured.get_secret_value():
            accepted |= _matches(supplied, configured.get_secret_value())
    return accepted and bool(supplied)


def bearer_supplied(request: Request) -> str | None:
    """The value of an ``Authorization: Bearer <value>`` header, or None when the request carries none."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def bearer_ok(request: Request, settings: StatusSettings) -> bool:
    """True when the request carries ``Authorization: Bearer <token>`` with the configured token.

    Reads the configured token once, and not at all when the request carries no bearer token.
    """
    supplied = bearer_supplied(request)
    if supplied is None or settings.token is None:
        return False
    expected = settings.token.get_secret_value()
    return bool(expected) and _matches(supplied, expected)


def client_address(request: Request) -> str:
    """The peer's address, the key login throttling counts by ("unknown" when the server does not say)."""
    return request.client.host if request.client is not None else "unknown"


def session_logged_in(request: Request) -> bool:
    """True for a signed session that logged in (through the form)."""
    return request.session.get("auth") is True


def record(request: Request, via: Via | None) -> None:
    """Remember for the rest of this request how it is authenticated (None: anonymous)."""
    setattr(request.state, _STATE_KEY, via)


def authenticated(request: Request) -> Via | None:
    """How this request is authenticated, as :func:`record` left it; None when anonymous or never recorded."""
    via: Via | None = getattr(request.state, _STATE_KEY, None)
    return via


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    """True when the form's token equals the session's, or the request is recorded as bearer-authenticated."""
    if authenticated(request) == "bearer":
        return True
    expected = request.session.get(CSRF_FIELD)
    supplied = form.get(CSRF_FIELD, "")
    return isinstance(expected, str) and bool(expected) and _matches(supplied, expected)


def log_in(request: Request) -> None:
    """Mark the session logged in with a fresh CSRF token (a token seen before login is not reused after)."""
    request.session.clear()
    request.session["auth"] = True
    request.session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out(request: Request) -> None:
    request.session.clear()


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (last value wins).

    Raises :class:`~delivery_daemon.errors.BodyTooLarge` once the body passes :data:`MAX_FORM_BYTES`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BodyTooLarge
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=32))

"""The status page's routes and its app: ``create_status_app(daemon, settings)`` → a self-contained Starlette app,
which :func:`status_mount` puts at ``/status`` on the admin app
(:func:`~delivery_daemon.http.metrics.create_admin_app`).

Server-rendered with Jinja2 from the package's ``templates/``; ``static/`` holds the one stylesheet. Pages work
without JavaScript. Every page but ``/login`` needs a login (see :mod:`.auth`); wrong secrets are throttled (see
:mod:`.throttle`); every POST needs a CSRF token. Each request is authenticated once, by the guard every route is
wrapped in (:meth:`StatusPages._authenticate`), which records the outcome on the request for the CSRF check and the
page. Actions go through the same queue transition as the CLI's ``orders retry|redeliver``
(:func:`~delivery_daemon.storage.transitions.operator_requeue`) and then wake the worker.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import jinja2
import structlog
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from delivery_daemon.clock import Clock
from delivery_daemon.config import StatusSettings
from delivery_daemon.errors import BodyTooLarge
from delivery_daemon.pipeline.worker import Worker
from delivery_daemon.status import auth
from delivery_daemon.status.chart import bar_chart
from delivery_daemon.status.throttle import LoginThrottle, Throttled
from delivery_daemon.storage.jobs import QueueError
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.overview import OrderFilter, StatusQueries
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.stock_pool import POOL_STORE
from delivery_daemon.storage.transitions import OPERATOR_RETRYABLE

log = structlog.get_logger("delivery_daemon.status")


class StatusParts(Protocol):
    """What the page reads of the running daemon and acts on (a :class:`~delivery_daemon.compose.Daemon`)."""

    engine: Engine
    clock: Clock
    queue: JobQueue
    worker: Worker


HERE = Path(__file__).parent
MOUNT_PATH = "/status"
"""Where the page lives on the admin address."""
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

Endpoint = Callable[[Request], Awaitable[Response]]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (no framing, no inline scripts, nothing cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _root(request: Request) -> str:
    """The path the app is mounted at ("" at the top), so links and redirects work under any prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _safe_next(target: str, root: str) -> str:
    """Only a local path may be a post-login destination (no open redirect to another host); else the overview."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{root}/"


class StatusPages:
    """The endpoints, bound to one daemon and the ``status`` settings."""

    def __init__(self, daemon: StatusParts, settings: StatusSettings) -> None:
        self.daemon = daemon
        self.settings = settings
        self.queries = StatusQueries(daemon.engine, daemon.clock, low_stock=settings.low_stock)
        self.throttle = LoginThrottle(
            daemon.clock,
            per_client=settings.login_failures,
            overall=settings.login_failures_global,
            window=settings.login_window,
        )
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
        env.filters["when"] = _when
        env.filters["duration"] = _duration
        self.templates = Jinja2Templates(env=env)

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.setdefault("flash", request.session.pop("flash", None))
        context["csrf_token"] = auth.csrf_token(request)
        context["logged_in"] = auth.authenticated(request) is not None
        context["now"] = self.daemon.clock.now()
        context["root"] = _root(request)
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    # -- guards ----------------------------------------------------------------------------------------------

    def _throttled(self, request: Request, via: str) -> Throttled | None:
        refused = self.throttle.check(auth.client_address(request))
        if refused is not None:
            log.warning(
                "status.login_throttled",
                client=auth.client_address(request),
                via=via,
                scope=refused.scope,
                retry_after=refused.retry_after,
            )
        return refused

    def _failed(self, request: Request, via: str) -> None:
        # Never the supplied secret: only who tried, how, and how often.
        client = auth.client_address(request)
        failures = self.throttle.failed(client)
        log.warning(
            "status.login_failed", client=client, via=via, failures=failures, window_s=self.settings.login_window
        )

    def _bearer(self, request: Request) -> Response | None:
        """None when the request's bearer token is right; else 429 (throttled) or 401, with a JSON reason.

        The token is compared once; a wrong one counts as one failed login.
        """
        refused = self._throttled(request, "bearer")
        if refused is not None:
            return JSONResponse(
                {"error": "too many failed logins; try again later"},
                status_code=429,
                headers={"Retry-After": str(refused.retry_after)},
            )
        if auth.bearer_ok(request, self.settings):
            self.throttle.succeeded(auth.client_address(request))
            return None
        self._failed(request, "bearer")
        return JSONResponse(
            {"error": "a valid bearer token is required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="status"'},
        )

    def _authenticate(self, request: Request, *, login_required: bool) -> Response | None:
        """Decide how ``request`` is authenticated and :func:`~.auth.record` it; the one place a token is compared.

        Where a login is required, a supplied bearer token is always a login attempt (:meth:`_bearer`), with or
        without a logged-in session beside it: the refusal is returned and nothing is recorded; a right token records
        ``"bearer"``. Without a bearer token a logged-in session records ``"session"``, else None. The public routes
        (the login form) ignore a bearer token altogether: they never compare it, so they cannot be used to test
        guesses unthrottled, and their answer does not depend on it. Returns None to go on; the caller decides what
        None means.
        """
        if login_required and auth.bearer_supplied(request) is not None:
            refused = self._bearer(request)
            if refused is not None:
                return refused
            auth.record(request, "bearer")
        else:
            auth.record(request, "session" if auth.session_logged_in(request) else None)
        return None

    def public(self, endpoint: Endpoint) -> Endpoint:
        """A route open to everyone (the login form): only a session counts (a bearer token is ignored); nothing is
        refused."""

        async def guarded(request: Request) -> Response:
            self._authenticate(request, login_required=False)
            return await endpoint(request)

        return guarded

    def page(self, endpoint: Endpoint) -> Endpoint:
        """A page that needs a login: anonymous visitors are sent to the login form; a bearer token is checked, even
        beside a session."""

        async def guarded(request: Request) -> Response:
            refused = self._authenticate(request, login_required=True)
            if refused is not None:
                return refused
            if auth.authenticated(request) is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{_root(request)}/login?next={quote(target, safe='/')}", status_code=303)
            return await endpoint(request)

        return guarded

    def action(self, endpoint: Callable[[Request, dict[str, str]], Awaitable[Response]]) -> Endpoint:
        """A POST that needs a login and a valid CSRF token; the endpoint receives the parsed form."""

        async def guarded(request: Request) -> Response:
            refused = self._authenticate(request, login_required=True)
            if refused is not None:
                return refused
            if auth.authenticated(request) is None:
                return self.render(request, "error.html", 401, message="Log in first.")
            try:
                form = await auth.read_form(request)
            except BodyTooLarge:
                return self.render(request, "error.html", 413, message="The form is too large.")
            if not auth.csrf_ok(request, form):
                return self.render(
                    request,
                    "error.html",
                    403,
                    message="The form expired or did not come from this page. Go back and reload.",
                )
            return await endpoint(request, form)

        return guarded

    # -- login -----------------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        default = f"{_root(request)}/"
        return self.render(
            request, "login.html", next=_safe_next(request.query_params.get("next", default), _root(request))
        )

    async def login(self, request: Request) -> Response:
        try:
            form = await auth.read_form(request)
        except BodyTooLarge:
            return self.render(request, "error.html", 413, message="The form is too large.")
        target = _safe_next(form.get("next", ""), _root(request))
        refused = self._throttled(request, "form")
        if refused is not None:
            response = self.render(
                request,
                "login.html",
                429,
                next=target,
                error="Too many failed logins. Wait a few minutes and try again.",
            )
            response.headers["Retry-After"] = str(refused.retry_after)
            return response
        if not auth.csrf_ok(request, form):
            return self.render(
                request, "login.html", 403, next=target, error="The login form expired. Please try again."
            )
        if not auth.secret_accepted(self.settings, form.get("password", "")):
            self._failed(request, "form")
            return self.render(request, "login.html", 401, next=target, error="Wrong password or token.")
        self.throttle.succeeded(auth.client_address(request))
        auth.log_in(request)
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request, form: dict[str, str]) -> Response:
        auth.log_out(request)
        return RedirectResponse(f"{_root(request)}/login", status_code=303)

    # -- pages -----------------------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        overview = await self.queries.overview()
        chart = bar_chart(
            [(bar.label, bar.count) for bar in overview.latency], title="Order-to-delivery latency, last 24 hours"
        )
        return self.render(request, "overview.html", overview=overview, chart=chart, states=list(JobState))

    async def orders(self, request: Request) -> Response:
        params = request.query_params
        try:
            page = int(params.get("page", "1"))
        except ValueError:
            page = 1
        state = params.get("state", "")
        wanted = OrderFilter(
            state=state if state in {s.value for s in JobState} else "",
            store=params.get("store", "")[:64],
            product=params.get("product", "")[:128],
            search=params.get("q", "").strip()[:128],
            page=page,
        )
        result = await self.queries.orders(wanted)
        return self.render(request, "orders.html", result=result, wanted=wanted, states=list(JobState))

    async def order(self, request: Request) -> Response:
        detail = await self.queries.order(request.path_params["job_id"])
        if detail is None:
            return self.render(request, "error.html", 404, message="No such order.")
        return self.render(
            request,
            "order.html",
            detail=detail,
            retryable=detail.job["state"] in OPERATOR_RETRYABLE,
            redeliverable=detail.redeliverable,
        )

    async def stock(self, request: Request) -> Response:
        rows = await self.queries.stock()
        return self.render(request, "stock.html", rows=rows, low_stock=self.settings.low_stock, pool_store=POOL_STORE)

    # -- actions ---------------------------------------------------------------------------------------------

    async def retry(self, request: Request, form: dict[str, str]) -> Response:
        job_id: int = request.path_params["job_id"]
        moved = await self.daemon.queue.retry(job_id)
        return self._after_action(request, job_id, moved, "queued for another delivery attempt", "retried")

    async def redeliver(self, request: Request, form: dict[str, str]) -> Response:
        job_id: int = request.path_params["job_id"]
        moved = await self.daemon.queue.redeliver(job_id)
        return self._after_action(request, job_id, moved, "queued to send its stored keys again", "redelivered")

    def _after_action(self, request: Request, job_id: int, moved: bool, done: str, verb: str) -> Response:
        if moved:
            self.daemon.worker.wake()
            request.session["flash"] = f"Order #{job_id} {done}."
        else:
            request.session["flash"] = f"Order #{job_id} cannot be {verb} in its current state."
        return RedirectResponse(f"{_root(request)}/orders/{job_id}", status_code=303)

    async def database_error(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "error.html", 503, message="The database cannot be read right now.")


def _routes(pages: StatusPages) -> list[BaseRoute]:
    return [
        Route("/login", pages.public(pages.login_form), methods=["GET"]),
        Route("/login", pages.public(pages.login), methods=["POST"]),
        Route("/logout", pages.action(pages.logout), methods=["POST"]),
        Route("/", pages.page(pages.overview), methods=["GET"]),
        Route("/orders", pages.page(pages.orders), methods=["GET"]),
        Route("/orders/{job_id:int}", pages.page(pages.order), methods=["GET"]),
        Route("/orders/{job_id:int}/retry", pages.action(pages.retry), methods=["POST"]),
        Route("/orders/{job_id:int}/redeliver", pages.action(pages.redeliver), methods=["POST"]),
        Route("/stock", pages.page(pages.stock), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]


def status_mount(daemon: StatusParts, settings: StatusSettings) -> Mount:
    """The status page at :data:`MOUNT_PATH`, for the admin app's routes."""
    return Mount(MOUNT_PATH, app=create_status_app(daemon, settings))


def create_status_app(daemon: StatusParts, settings: StatusSettings) -> Starlette:
    """The status page as its own ASGI app (sessions, security headers and database-error page included)."""
    pages = StatusPages(daemon, settings)
    app = Starlette(
        routes=_routes(pages),
        middleware=[Middleware(SecurityHeaders), auth.session_middleware(settings)],
        exception_handlers={QueueError: pages.database_error},
    )
    app.state.daemon = daemon
    return app

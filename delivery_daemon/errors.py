"""Every exception the daemon raises on purpose derives from :class:`DeliveryDaemonError`.

::

    DeliveryDaemonError
    ├── ConfigError                 bad configuration; carries the key path (exit 2, one line)
    ├── PluginError                 a generator plugin could not be found, loaded or configured
    ├── WebhookRejected             an inbound webhook is refused; carries the HTTP status and a reason
    ├── StepOutcome                 control flow of one job step, decided by the worker
    │   ├── Retry                   try again later (``after`` seconds, or the schedule's next delay)
    │   ├── Dead                    never try again; the reason is recorded
    │   ├── Held                    not tried again until the operator acts (``orders retry`` / ``cancel``)
    │   └── OutOfStock              the generator has nothing to give now; the job waits for a refill
    ├── GeneratorError              a generator broke its contract (wrong count, bad download URL)
    └── MarketplaceError            a marketplace API answered something we cannot use
        └── AuthenticationFailed    the marketplace refused our API key

Errors from httpx and SQLAlchemy are translated into these at the boundary that calls them, so nothing above the
adapters needs to know which library failed.
"""

from __future__ import annotations


class DeliveryDaemonError(Exception):
    """Root of the package's exceptions."""


class ConfigError(DeliveryDaemonError):
    """The configuration is unusable; ``str()`` is one line naming the key path, what is wrong and, when known,
    what to type instead: ``<key.path>: <what is wrong>; expected <form>, e.g. <example>``."""

    def __init__(self, path: str, message: str, expected: str | None = None, example: str | None = None) -> None:
        self.path = path
        self.message = message
        self.expected = expected
        self.example = example
        line = f"{path}: {message}" if path else message
        if expected:
            line += f"; expected {expected}"
        if example:
            line += f", e.g. {example}" if expected else f"; e.g. {example}"
        super().__init__(line)


class PluginError(DeliveryDaemonError):
    """A generator plugin is missing, fails to import, or rejects its options."""


class WebhookRejected(DeliveryDaemonError):
    """An inbound webhook is refused before anything is stored."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class StepOutcome(DeliveryDaemonError):
    """Base of the named outcomes a job step raises to steer the worker."""

    def __init__(self, reason: str, *, http_status: int | None = None) -> None:
        self.reason = reason
        self.http_status = http_status
        super().__init__(reason)


class Retry(StepOutcome):
    """Try the job again: after ``after`` seconds if given (e.g. ``Retry-After``), else per the schedule."""

    def __init__(self, reason: str, *, after: float | None = None, http_status: int | None = None) -> None:
        super().__init__(reason, http_status=http_status)
        self.after = after


class Dead(StepOutcome):
    """Stop trying: the order cannot or must not be delivered."""


class Held(StepOutcome):
    """The order must not go out as it stands (e.g. its buyer email is not one mailbox): the job is ``held`` for
    the operator, who fixes the cause and retries it, or cancels it."""


class OutOfStock(StepOutcome):
    """The generator has no keys to give now; the job waits and is woken when stock is added."""


class GeneratorError(DeliveryDaemonError):
    """A generator returned something that breaks the contract."""


class MarketplaceError(DeliveryDaemonError):
    """A marketplace API answered something unusable."""


class AuthenticationFailed(MarketplaceError):
    """The marketplace refused the store's API key."""

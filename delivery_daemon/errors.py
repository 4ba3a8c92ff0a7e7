"""Every exception the daemon raises on purpose derives from :class:`DeliveryDaemonError`.

Each class the daemon (``delivery_daemon``) and its bundled plugins (``delivery_daemon_plugins``) define is drawn here,
with the module that defines it (under ``delivery_daemon.`` unless it names its package) and what it means.
Shared ones live in this module; the others next to the code whose failure they name::

    DeliveryDaemonError             errors               root: ``except DeliveryDaemonError`` catches all below
    ├── ConfigError                 errors               bad configuration; carries the key path (exit 2, one line)
    ├── Invalid                     config.formatter     a config validator's complaint with the form it expected
    ├── PluginError                 errors               a generator plugin could not be found, loaded or configured
    ├── WebhookRejected             errors               an inbound webhook is refused; carries HTTP status and reason
    ├── BodyTooLarge                errors               a request body (webhook, status-page form) is over its cap
    ├── StepOutcome                 errors               control flow of one job step, decided by the worker
    │   ├── Retry                   errors               try again later (``after`` s, or the schedule's next delay)
    │   ├── Dead                    errors               never try again; the reason is recorded
    │   │   └── NothingDue          errors               nothing of the order is this store's to deliver: cancelled
    │   ├── Held                    errors               not tried again until the operator acts (retry / cancel)
    │   └── OutOfStock              errors               the generator has nothing to give now; the job waits
    ├── GeneratorError              errors               a generator broke its contract (wrong count, bad URL)
    ├── MarketplaceError            errors               a marketplace API answered something we cannot use
    │   └── AuthenticationFailed    errors               the marketplace refused our API key
    ├── QueueError                  storage.jobs         the database failed underneath the job queue
    ├── LeaseLost                   storage.jobs         the job's lease expired and someone else took it
    ├── OrderCancelled              storage.jobs         a refund was pending when a step was saved: send nothing
    ├── OrderNotFound               storage.operator     no order matches the operator's reference
    ├── AmbiguousOrder              storage.operator     the reference matches orders in several stores
    ├── ActionRefused               storage.operator     the order's state does not allow the operator's action
    ├── StockError                  storage.stock_pool   the stock pool cannot be read or written, or an import is bad
    ├── DecryptError                storage.cipher       a sealed value cannot be opened (key id, key or ciphertext)
    ├── VaultError                  storage.vault        a stored secret is sealed but no configured key opens it
    ├── RekeyError                  storage.rekey        re-sealing under the current key stopped part way
    ├── BackupError                 storage.backup       the backup could not be made; nothing left at the target
    ├── BlockedDestination          net.guard            an outbound request is refused before connecting
    ├── LicenseError                generators.licence   a key file is unusable, or a licence key is bad or expired
    └── MigrateError                storage.transfer     the database copy failed or did not verify; target unchanged

Errors from httpx and SQLAlchemy are translated into these at the boundary that calls them, so nothing above the
adapters needs to know which library failed. A class that must also be a builtin (e.g. ``ValueError`` for a pydantic
validator) derives from both. ``delivery_daemon.reference`` is outside the tree: it plays other systems (the
marketplaces, the chaos runs) for tests and the demo, and its exceptions belong to those systems.
tests/core/test_errors.py checks that the tree, the modules and the class hierarchy agree.
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


class BodyTooLarge(DeliveryDaemonError):
    """A request body is larger than the route reading it accepts; the route answers 413."""


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


class NothingDue(Dead):
    """The order holds nothing this store delivers (e.g. a cart of physical goods only): the job ends ``cancelled``
    with the reason, outcome ``nothing_due``; nothing is sent and the marketplace is not told anything. A caller
    that does not know this outcome treats it as :class:`Dead`."""


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

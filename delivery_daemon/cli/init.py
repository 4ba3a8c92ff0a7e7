"""``delivery-daemon init --marketplace NAME [--channel email|webhook] [--store NAME] [--dir DIR]``: a seller's first
configuration.

It writes ``config.yaml`` — the marketplace's example from ``templates/`` (the same files as ``examples/config/``,
kept equal by a test), with the store renamed when ``--store`` is given — and ``delivery-daemon.env`` (mode 0600)
holding a placeholder for every ``${VAR}`` the file reads, then prints the three steps left: fill in the secrets,
``check-config``, and where in the marketplace's dashboard the webhook URL goes. An existing file is never
overwritten (exit 2, one line, nothing written). The secret the seller owns outright (the outbound webhook's
``whsec_`` secret, shared with their own system) is generated instead of left as a placeholder.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import ConfigError

TEMPLATES = Path(__file__).with_name("templates")
CONFIG_NAME = "config.yaml"
ENV_NAME = "delivery-daemon.env"
PLACEHOLDER = "PASTE-IT-HERE"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
GENERATED = frozenset({"DELIVERY_WEBHOOK_SECRET", "GUMROAD_PING_TOKEN"})
"""Secrets that are the seller's own to choose: init makes a random one instead of a placeholder."""


@dataclass(frozen=True)
class Marketplace:
    """What init tells a seller of one marketplace; its templates are ``templates/<name>[-<channel>].yaml``."""

    name: str
    docs: str
    """The anchor of its section in docs/marketplaces.md."""
    webhook_step: str
    """Where the webhook URL goes (``{url}``, ``{store}`` and ``{config}`` are filled in)."""
    default_channel: str


MARKETPLACES = {
    m.name: m
    for m in (
        Marketplace(
            "softstore",
            "softstore",
            "point your SoftStore profile's api_url at {url}:\n"
            "       delivery-daemon softstore connect --config {config} --store {store} --public-url {url}\n"
            "     (it sets api_url through SoftStore's POST /seller/profile and reads it back)",
            "marketplace",
        ),
        Marketplace(
            "sellix",
            "sellix",
            "Sellix dashboard, Settings > Webhooks: add an endpoint {url} for order:paid and order:disputed;\n"
            "     for a dynamic product, set the product's dynamic webhook to the same URL",
            "email",
        ),
        Marketplace(
            "shoppy",
            "shoppy",
            "Shoppy dashboard: add {url} to each product's webhook URLs (the product's webhook_urls)",
            "email",
        ),
        Marketplace(
            "stripe",
            "stripe-based-stores",
            "Stripe Dashboard > Developers > Webhooks > Add endpoint {url} with the events\n"
            "     payment_intent.succeeded, checkout.session.completed, charge.refunded, charge.dispute.created",
            "email",
        ),
        Marketplace(
            "virtual-stores",
            "virtual-stores",
            "Stripe Dashboard > Developers > Webhooks > Add endpoint {url} with the events\n"
            "     payment_intent.succeeded, checkout.session.completed, charge.refunded, charge.dispute.created;\n"
            "     then set api_url and staff.email in {config} (a staff account of your shop)",
            "email",
        ),
        Marketplace(
            "lemonsqueezy",
            "lemon-squeezy",
            "Lemon Squeezy dashboard, Settings > Webhooks: add an endpoint {url} with a signing secret of your\n"
            "     choice and the events order_created and order_refunded; then set store_id in {config}",
            "email",
        ),
        Marketplace(
            "polar",
            "polar",
            "Polar dashboard, Settings > Webhooks: add an endpoint {url}, format Raw, with the events\n"
            "     order.paid and order.refunded",
            "email",
        ),
        Marketplace(
            "stripe-checkout",
            "stripe-checkout--payment-links",
            "Stripe Dashboard > Developers > Webhooks > Add endpoint {url} with the events\n"
            "     checkout.session.completed, checkout.session.async_payment_succeeded,\n"
            "     checkout.session.async_payment_failed, charge.refunded, charge.dispute.created;\n"
            "     then list your Stripe Price or Product ids under products in {config}",
            "email",
        ),
        Marketplace(
            "gumroad",
            "gumroad",
            "Gumroad, Settings > Advanced > Ping: the URL {url}?token=<webhook_secret from {config}>;\n"
            "     for refunds and disputes, subscribe the same URL to refund and dispute\n"
            "     (docs/marketplaces.md#gumroad)",
            "email",
        ),
        Marketplace(
            "sellauth",
            "sellauth",
            "SellAuth dashboard: set each product's deliverables to Dynamic with the webhook URL {url}",
            "email",
        ),
        Marketplace(
            "standard-webhooks",
            "standard-webhooks",
            "your platform's webhook settings: endpoint {url} for its paid, refunded and disputed orders\n"
            "     (sent as order.paid, order.refunded, order.disputed)",
            "email",
        ),
        Marketplace(
            "paddle",
            "paddle",
            "Paddle > Developer tools > Notifications > New destination: URL {url} with the events\n"
            "     transaction.completed, adjustment.created, adjustment.updated; then set api_key in {config}",
            "email",
        ),
    )
}

SECRET_HINTS = {
    "SOFTSTORE_API_KEY": "your SoftStore seller API key (it also signs SoftStore's webhooks)",
    "SELLIX_WEBHOOK_SECRET": "Sellix dashboard, Settings: the webhook secret",
    "SHOPPY_WEBHOOK_SECRET": "Shoppy dashboard, Settings: the webhook secret",
    "STRIPE_WEBHOOK_SECRET": "Stripe Dashboard > Developers > Webhooks > your endpoint: Signing secret (whsec_...)",
    "STRIPE_SECRET_KEY": "Stripe Dashboard > Developers > API keys: a restricted key with Checkout Sessions: Read",
    "GUMROAD_PING_TOKEN": "generated: the token in your Gumroad Ping URL (?token=...)",
    "GUMROAD_ACCESS_TOKEN": "Gumroad, Settings > Advanced > Applications: your application's access token",
    "SELLAUTH_WEBHOOK_SECRET": "SellAuth dashboard, Shop > Miscellaneous: the webhook secret",
    "STANDARD_WEBHOOKS_SECRET": "your platform's signing secret for this endpoint (whsec_...)",
    "LEMONSQUEEZY_WEBHOOK_SECRET": "Lemon Squeezy dashboard, Settings > Webhooks: the signing secret you chose",
    "LEMONSQUEEZY_API_KEY": "Lemon Squeezy dashboard, Settings > API: an API key",
    "POLAR_WEBHOOK_SECRET": "Polar dashboard, Settings > Webhooks > your endpoint: its secret, as shown",
    "VIRTUAL_STORES_PASSWORD": "the password of the staff account staff.email of your Virtual Stores shop",
    "PADDLE_WEBHOOK_SECRET": "Paddle > Developer tools > Notifications > your destination: Secret key (pdl_ntfset_...)",
    "PADDLE_API_KEY": "Paddle > Developer tools > Authentication: an API key that reads transactions and customers",
    "SMTP_PASSWORD": "the password of delivery.email.username on your SMTP server",
    "DELIVERY_WEBHOOK_SECRET": "generated: give the same value to your own system, which checks the signatures",
}
"""Where each secret a template reads comes from (a test checks every ``${VAR}`` of every template is here)."""


def template_path(marketplace: str, channel: str) -> Path:
    """``templates/<marketplace>.yaml`` for the marketplace's own channel, else ``<marketplace>-<channel>.yaml``."""
    own = channel == MARKETPLACES[marketplace].default_channel == "marketplace"
    return TEMPLATES / (f"{marketplace}.yaml" if own else f"{marketplace}-{channel}.yaml")


def channels(marketplace: str) -> list[str]:
    """The delivery channels there is a template for."""
    return [channel for channel in ("marketplace", "email", "webhook") if template_path(marketplace, channel).is_file()]


def rename_store(text: str, default: str, store: str) -> str:
    """The template with its store (named ``default``) called ``store``: the ``- name:`` line, its webhook path and
    ``--store`` in the comments. Nothing else in a template spells the default name after one of those."""
    return re.sub(
        rf"(/webhooks/|--store |^\s*- name: ){re.escape(default)}(?![\w.-])", rf"\g<1>{store}", text, flags=re.M
    )


def env_names(text: str) -> list[str]:
    """Every ``${VAR}`` the configuration reads (in its values, not its comments), in order, once."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    return list(dict.fromkeys(name for value in strings(yaml.safe_load(text)) for name in ENV_REF.findall(value)))


def env_file(names: list[str]) -> str:
    """The secrets file: a comment with each variable's origin, then ``NAME=value`` (systemd and docker read it)."""
    lines = [
        "# Secrets for delivery-daemon, read as ${NAME} in config.yaml. Keep this file mode 0600.",
        "# Load it: systemd EnvironmentFile= (e.g. /etc/delivery-daemon/secrets.env), docker --env-file, or",
        "# in a shell: set -a; . ./delivery-daemon.env; set +a",
    ]
    for name in names:
        value = _generated(name) if name in GENERATED else PLACEHOLDER
        lines += ["", f"# {SECRET_HINTS.get(name, 'the value config.yaml expects here')}", f"{name}={value}"]
    return "\n".join(lines) + "\n"


def _generated(name: str) -> str:
    """A fresh secret for ``name``: a URL token is hex (it goes into a query string as it is), the rest ``whsec_``."""
    if name == "GUMROAD_PING_TOKEN":
        return secrets.token_hex(24)
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _store_name(store: str) -> str:
    pattern = next(
        item.pattern for item in StoreSettings.model_fields["name"].metadata if getattr(item, "pattern", None)
    )
    if not re.match(pattern, store):
        raise ConfigError("--store", f"{store[:64]!r} cannot be a store name", *expect(StoreSettings, "name"))
    return store


def _write_new(path: Path, text: str, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def cmd_init(args: argparse.Namespace) -> int:
    marketplace = MARKETPLACES[args.marketplace]
    channel = args.channel or marketplace.default_channel
    if channel not in channels(marketplace.name):
        problem = (
            f"{marketplace.name} has no delivery API of its own"
            if channel == "marketplace"
            else f"there is no {channel} template for {marketplace.name}"
        )
        raise ConfigError(
            "--channel", problem, "one of " + ", ".join(channels(marketplace.name)), marketplace.default_channel
        )
    store = _store_name(args.store or marketplace.name)
    folder = Path(args.dir)
    config, env = folder / CONFIG_NAME, folder / ENV_NAME
    for path in (config, env):
        if path.exists():
            raise ConfigError("", f"{path} already exists; init never overwrites (move it away or use --dir)")
    text = rename_store(template_path(marketplace.name, channel).read_text(encoding="utf-8"), marketplace.name, store)
    names = env_names(text)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _write_new(config, text, 0o644)
        _write_new(env, env_file(names), 0o600)
    except FileExistsError as exc:  # made by someone else since the check above
        raise ConfigError(
            "", f"{exc.filename} already exists; init never overwrites (move it away or use --dir)"
        ) from None
    url = f"https://<your host>/webhooks/{store}"
    print(f"wrote {config} ({marketplace.name}, delivering by {channel}) and {env} (mode 0600)")
    print("next:")
    print(f"  1. fill in the secrets in {env}:")
    for name in names:
        print(f"       {name:<26} {SECRET_HINTS.get(name, '')}")
    print(f'     and the values marked "yours" in {config} (product ids, SMTP server, your system\'s URL)')
    print(f"  2. check it: set -a; . {env}; set +a; delivery-daemon check-config --config {config}")
    print("  3. " + marketplace.webhook_step.format(url=url, store=store, config=config))
    print(f"more: docs/marketplaces.md#{marketplace.docs}")
    return 0


def register(sub: Any) -> None:
    init = sub.add_parser("init", help="write a first config.yaml and secrets file for a marketplace")
    init.add_argument("--marketplace", required=True, choices=list(MARKETPLACES))
    init.add_argument(
        "--channel",
        choices=["marketplace", "email", "webhook"],
        help="how keys reach the buyer (default: the marketplace's API for softstore, else email)",
    )
    init.add_argument("--store", help="the store's name, the last part of its webhook URL (default: the marketplace)")
    init.add_argument("--dir", default=".", help="where to write config.yaml and delivery-daemon.env (default: .)")
    init.set_defaults(func=cmd_init)

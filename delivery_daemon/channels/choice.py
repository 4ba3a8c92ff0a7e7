"""Choosing a store's delivery channel (``stores[i].delivery.channel``): the marketplace's own delivery API
(``marketplace``, the default), email to the buyer (``email``), or a signed webhook to the seller's system
(``webhook``). Every channel is a :class:`~delivery_daemon.marketplaces.base.Sink` and goes through the same worker
retry machinery."""

from __future__ import annotations

from dataclasses import dataclass, field

from delivery_daemon.channels.webhook import WebhookDelivery
from delivery_daemon.config import ChannelSettings, SmtpSettings, expect
from delivery_daemon.errors import ConfigError
from delivery_daemon.marketplaces.base import AdapterContext, Marketplace, Sink


@dataclass(frozen=True)
class Channel:
    sink: Sink
    secrets: list[str] = field(default_factory=list)
    """Secrets the channel holds (SMTP password, webhook secret and URL), for the log redactor."""


def build_channel(adapter: Marketplace, context: AdapterContext) -> Channel:
    """The store's sink, or ConfigError naming the key that is missing or wrong."""
    settings = context.store.delivery
    path = f"{context.path}.delivery"
    if settings.channel == "marketplace":
        sink = adapter.sink()
        if sink is None:
            raise ConfigError(
                f"{path}.channel",
                f"{context.store.marketplace} has no delivery API",
                "email or webhook (with its settings)",
                "webhook",
            )
        return Channel(sink)
    if settings.channel == "email":
        # Imported only for a store that mails: with aiosmtplib, about 1 MB of a daemon's idle RSS that most
        # configurations never use (bench daemon: 85 -> 84 MB; issue #26, item 5).
        from delivery_daemon.channels.email import EmailDelivery, check_subject

        if settings.email is None:
            raise ConfigError(f"{path}.email", "required when channel is email", *expect(ChannelSettings, "email"))
        try:
            check_subject(settings.email.subject)
        except ValueError as exc:
            raise ConfigError(f"{path}.email.subject", str(exc), *expect(SmtpSettings, "subject")) from None
        email = EmailDelivery(settings.email)
        return Channel(email, email.secrets())
    if settings.webhook is None:
        raise ConfigError(f"{path}.webhook", "required when channel is webhook", *expect(ChannelSettings, "webhook"))
    try:
        webhook = WebhookDelivery(settings.webhook, context)
    except ValueError as exc:
        raise ConfigError(f"{path}.webhook.secret", str(exc), *expect(ChannelSettings, "webhook", "secret")) from None
    return Channel(webhook, webhook.secrets())

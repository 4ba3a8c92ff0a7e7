"""The buyer's email address as the ``email`` channel's recipient: exactly one mailbox, or the order is held.

A marketplace may hand over anything as the buyer's email: a list (``a@x.org, b@y.org``), a header injection
(``a@x.org\\r\\nBcc: …``), a group (``friends: a@x.org, b@y.org;``). Sent as it is, one order's keys would go to
every address in it. :func:`mailbox` accepts exactly one mailbox — an address, optionally with a display name
(``Name <a@Example.com>``) — checked by the ``email-validator`` library for syntax only (no DNS), and answers its
normalised form (the domain lower-cased, the display name dropped), which is what the job stores and the channel
sends to. Anything else raises :class:`~delivery_daemon.errors.Held` with a reason that says what is wrong without
repeating the address.

It applies to stores whose ``delivery.channel`` is ``email``, at each point the address becomes known: the webhook
(before the 2xx; the order is stored ``held``), verification (the marketplace's API), and the channel itself.
"""

from __future__ import annotations

from delivery_daemon.config import StoreSettings
from delivery_daemon.errors import Held

REASON = "buyer email is not exactly one mailbox"
"""The start of every hold reason given here (the validator's own words follow)."""


def mailbox(value: str) -> str:
    """``value``'s one mailbox, normalised; :class:`Held` if it is not exactly one mailbox."""
    # Imported on first use: only stores that mail check addresses, and email-validator (with idna and dnspython's
    # pieces) is memory a daemon that never mails should not hold (issue #26, item 5).
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(value.strip(" \t"), check_deliverability=False, allow_display_name=True)
    except EmailNotValidError as exc:
        raise Held(f"{REASON}: {exc}"[:500]) from None
    return checked.normalized


def mails(store: StoreSettings) -> bool:
    """True if the store delivers by email (the only channel that sends to the buyer's address)."""
    return store.delivery.channel == "email"


def recipient(store: StoreSettings, value: str | None) -> str | None:
    """The buyer email to keep for an order of ``store``: normalised when the store mails it (Held if it is not one
    mailbox), as the marketplace gave it otherwise; None stays None (the channel refuses that itself)."""
    if value is None or not mails(store):
        return value
    return mailbox(value)

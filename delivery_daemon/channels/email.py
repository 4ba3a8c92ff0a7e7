"""The ``email`` delivery channel: the order's content to the buyer, through the seller's own SMTP server.

The body is the product's rendered template (plain text), plus the download link when the template did not
include it. The ``Message-ID`` is derived from (store, order id), so a retry after an unanswered send is the same
message to the buyer's mail system. SMTP errors become the worker's outcomes: a permanent refusal of the recipient
or the message (5xx) is ``Dead``; a temporary one (4xx), a refused login, a timeout or a lost connection is
``Retry`` (the seller may fix the server or the credentials meanwhile). Reasons never include the password.

The recipient is exactly one mailbox, normalised (:func:`~delivery_daemon.recipient.mailbox`); a stored address that
is anything else (a list, a group, a header injection) is ``Held`` and nothing is sent — the last line of defence
behind the same check at the webhook and at verification.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage

import aiosmtplib

from delivery_daemon.config import SmtpSettings
from delivery_daemon.errors import Dead, Retry
from delivery_daemon.marketplaces.base import Receipt
from delivery_daemon.order import Content
from delivery_daemon.recipient import mailbox
from delivery_daemon.storage.models import Job

SUBJECT_FIELDS = ("order_id", "product_id")


def check_subject(subject: str) -> None:
    """Raise ValueError unless the subject uses only ``{order_id}`` and ``{product_id}``."""
    try:
        subject.format(order_id="", product_id="")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(f"subject may use only {{order_id}} and {{product_id}} ({type(exc).__name__})") from None


def build_message(settings: SmtpSettings, job: Job, content: Content, recipient: str) -> EmailMessage:
    """The email for one order (the same bytes on every attempt)."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = recipient
    message["Subject"] = settings.subject.format(order_id=job.order_id, product_id=job.product_id)
    digest = hashlib.sha256(f"{job.store}\0{job.order_id}".encode()).hexdigest()[:32]
    message["Message-ID"] = f"<delivery.{digest}@{settings.sender.rsplit('@', 1)[1]}>"
    body = content.text
    if content.download and content.download not in body:
        body += f"\n\nDownload: {content.download}"
    message.set_content(body + "\n")
    return message


class EmailDelivery:
    """Sends each order's content to its buyer's email address."""

    name = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def secrets(self) -> list[str]:
        return [self.settings.password.get_secret_value()] if self.settings.password else []

    async def send(self, job: Job, content: Content) -> Receipt:
        if not job.buyer_email:
            raise Dead("the order has no buyer email address to deliver to")
        s = self.settings
        to = mailbox(job.buyer_email)  # Held unless exactly one mailbox
        message = build_message(s, job, content, to)
        try:
            await aiosmtplib.send(
                message,
                recipients=[to],
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password.get_secret_value() if s.password else None,
                timeout=s.timeout,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",
                cert_bundle=s.ca_file,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [error.code for error in exc.recipients]
            if codes and all(code >= 500 for code in codes):
                raise Dead(f"SMTP server refused the recipient ({codes[0]})") from None
            raise Retry(f"SMTP server refused the recipient for now ({codes[0] if codes else '?'})") from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise Retry(f"SMTP login refused ({exc.code})") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise Dead(f"SMTP server refused the message ({exc.code}: {exc.message[:200]})") from None
            raise Retry(f"SMTP server answered {exc.code}: {exc.message[:200]}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise Retry(f"SMTP failure ({type(exc).__name__})") from None
        return Receipt("delivered", None, f"emailed via {s.host}")

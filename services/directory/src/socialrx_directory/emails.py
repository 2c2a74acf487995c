"""Emails to an organisation: a referral arrived; an unanswered one will be declined in two days.

Once per referral and reason, across restarts and replicas: `enqueue` adds a row keyed by
(referral_id, reason) in the transaction of its cause (the consumed `referral.created`, or the
reminder sweep), a second enqueue does nothing. The sender claims one row at a time with
`FOR UPDATE SKIP LOCKED` (another replica skips it), sends it over SMTP while holding the claim, and
marks it sent in the same transaction once the server accepted the message. If the mail server is
away, the row waits with exponential backoff and is sent when it is back. The residual case: a
crash after the server accepted and before the commit sends that email again on the next run
(SMTP gives no way to ask "did you get this?"); at least once, never lost.

The message says only that there is something to look at and links to the charity's inbox: no
person, no referral details (see domain.notification_email).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.logging import get_logger
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import email_notifications, organizations, referral_inbox

log = get_logger(__name__)

SMTP_TIMEOUT_S = 30.0
BATCH = 20


async def enqueue(session: AsyncSession, referral_id: str, organisation_id: str, reason: str, now: datetime) -> None:
    """Queue one email (`now` is the cause's time, the sweep's clock); a second call does nothing."""
    await enqueue_many(session, [(referral_id, organisation_id)], reason, now)


async def enqueue_many(session: AsyncSession, referrals: list[tuple[str, str]], reason: str, now: datetime) -> None:
    """`enqueue` for many (referral, organisation) at once: one multi-row insert."""
    if not referrals:
        return
    await session.execute(
        pg_insert(email_notifications).on_conflict_do_nothing(index_elements=["referral_id", "reason"]),
        [
            {
                "referral_id": referral_id,
                "reason": reason,
                "organisation_id": organisation_id,
                "status": "pending",
                "attempts": 0,
                # The sender works on the wall clock, whatever clock the sweep was given.
                "next_attempt_at": datetime.now(timezone.utc),
                "created_at": now,
            }
            for referral_id, organisation_id in referrals
        ],
    )


async def reminder_sweep(rt: ServiceRuntime, now: datetime) -> int:
    """Enqueue a reminder for every referral still unanswered REMINDER_BEFORE_DECLINE before its auto-decline."""
    async with rt.transaction() as session:
        due = (
            await session.execute(
                select(referral_inbox.c.referral_id, referral_inbox.c.organisation_id).where(
                    referral_inbox.c.status == domain.DECIDABLE,
                    referral_inbox.c.referred_at <= now - (domain.AUTO_DECLINE_AFTER - domain.REMINDER_BEFORE_DECLINE),
                    # Past the deadline the auto-decline takes it: a reminder then would be a lie.
                    referral_inbox.c.referred_at > now - domain.AUTO_DECLINE_AFTER,
                )
            )
        ).all()
        for row in due:
            await enqueue(session, row.referral_id, row.organisation_id, "reminder", now)
    return len(due)


def _send(target: domain.SmtpTarget, message: EmailMessage) -> None:
    """Blocking SMTP (run in a thread): returns once the server accepted the message, raises otherwise."""
    context = ssl.create_default_context()
    if target.implicit_tls:
        client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT_S, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT_S)
    with client:
        client.ehlo()
        if not target.implicit_tls and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        if target.username:
            client.login(target.username, target.password or "")
        client.send_message(message)


class EmailSender:
    def __init__(
        self,
        rt: ServiceRuntime,
        *,
        smtp_url: str,
        web_base_url: str,
        sender: str,
        retry_base_s: float = 30.0,
        retry_cap_s: float = 3600.0,
    ) -> None:
        self.rt = rt
        self.target = domain.smtp_target(smtp_url)
        self.web_base_url = web_base_url
        self.sender = sender
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s

    async def run_once(self) -> int:
        """Send what is due, one row per transaction; stop at the first failure (the server is likely away)."""
        sent = 0
        for _ in range(BATCH):
            outcome = await self._one()
            if outcome in ("nothing due", "failed"):
                break
            sent += outcome == "sent"
        return sent

    async def _one(self) -> str:
        now = datetime.now(timezone.utc)
        async with self.rt.transaction() as session:
            row = (
                (
                    await session.execute(
                        select(
                            email_notifications, organizations.c.email, referral_inbox.c.status.label("referral_status")
                        )
                        .outerjoin(organizations, organizations.c.id == email_notifications.c.organisation_id)
                        .outerjoin(referral_inbox, referral_inbox.c.referral_id == email_notifications.c.referral_id)
                        .where(email_notifications.c.status == "pending", email_notifications.c.next_attempt_at <= now)
                        .order_by(email_notifications.c.id)
                        .limit(1)
                        .with_for_update(of=email_notifications, skip_locked=True)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return "nothing due"
            done = update(email_notifications).where(email_notifications.c.id == row["id"])
            if not row["email"]:
                await session.execute(done.values(status="skipped", last_error="the organisation has no email address"))
                return "skipped"
            if row["reason"] == "reminder" and row["referral_status"] != domain.DECIDABLE:
                await session.execute(done.values(status="skipped", last_error="answered before the reminder went"))
                return "skipped"
            subject, body = domain.notification_email(row["reason"], self.web_base_url)
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = self.sender, row["email"], subject
            message.set_content(body)
            try:
                await asyncio.wait_for(asyncio.to_thread(_send, self.target, message), SMTP_TIMEOUT_S + 5)
            except (TimeoutError, OSError, smtplib.SMTPException) as exc:
                attempts = row["attempts"] + 1
                delay = domain.retry_delay_s(attempts, self.retry_base_s, self.retry_cap_s)
                await session.execute(
                    done.values(
                        attempts=attempts, last_error=type(exc).__name__, next_attempt_at=now + timedelta(seconds=delay)
                    )
                )
                log.warning("notification email not sent; will retry", attempts=attempts, error=type(exc).__name__)
                return "failed"
            await session.execute(
                done.values(
                    status="sent", sent_at=datetime.now(timezone.utc), attempts=row["attempts"] + 1, last_error=None
                )
            )
            return "sent"

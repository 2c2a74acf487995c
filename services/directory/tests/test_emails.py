"""Emails to organisations, through a real SMTP server (aiosmtpd) in the test process."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import datetime, timedelta, timezone
from email import message_from_bytes

from aiosmtpd.controller import Controller
from sqlalchemy import select

from socialrx_directory import domain, emails
from socialrx_directory.app import Settings, build
from socialrx_directory.store import email_notifications
from socialrx_harness.testing import auth, publish_event, running_service, wait_for
from socialrx_shared import events as ev

WEB = "https://socialrx.example-pcn.nhs.uk"
PERSON_DETAILS = ("9434765919", "943 476 5919", "Ada", "Okonkwo", "LS1 4AP", "LS1", "1951", "75-84")


class Mailbox:
    """Every message the SMTP server accepted."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.rcpt_tos, envelope.content))
        return "250 Message accepted for delivery"

    def texts(self) -> list[str]:
        return [content.decode() for _, content in self.messages]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _created(referral_id: str, org: str, at: datetime) -> ev.ReferralCreated:
    return ev.ReferralCreated(
        referral_id=referral_id,
        pcn_id="U12345",
        practice_id="B82005",
        link_worker_id="lw-1",
        organisation_id=org,
        service_id="svc-" + org,
        needs=["loneliness"],
        person_ref="c" * 64,
        age_band="75-84",
        postcode_district="LS1",
        consent_to_share=True,
        created_at=at,
    )


async def _organisation(client, jwt_secret, email: str | None) -> str:
    body = {"name": f"Mail Friends {uuid.uuid4().hex[:6]}", **({"email": email} if email else {})}
    made = await client.post("/organizations", headers=auth(jwt_secret, "admin"), json=body)
    assert made.status_code == 201, made.text
    return made.json()["id"]


async def _rows(app, referral_id: str) -> list:
    async with app.state.runtime.sessionmaker() as session:
        return (
            (
                await session.execute(
                    select(email_notifications)
                    .where(email_notifications.c.referral_id == referral_id)
                    .order_by(email_notifications.c.id)
                )
            )
            .mappings()
            .all()
        )


def _assert_no_personal_details(texts: list[str]) -> None:
    for text in texts:
        for detail in PERSON_DETAILS:
            assert detail not in text, detail


async def test_arrival_and_reminder_are_emailed_once_each_with_no_personal_details(
    kafka, postgres, jwt_secret, kit
) -> None:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running_service(
            build,
            Settings,
            database_url=postgres.new_database("dir"),
            kafka=kafka.bootstrap_servers,
            jwt_secret=jwt_secret,
            smtp_url=f"smtp://127.0.0.1:{port}",
            web_base_url=WEB,
            email_poll_interval_s=0.2,
        ) as (app, client):
            org = await _organisation(client, jwt_secret, "referrals@mail-friends.example")
            quiet_org = await _organisation(client, jwt_secret, None)
            referral_id, quiet_referral = "r-" + uuid.uuid4().hex[:8], "r-" + uuid.uuid4().hex[:8]
            referred_at = datetime.now(timezone.utc)
            envelope = await kit.publish(
                kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(referral_id, org, referred_at)
            )
            await kit.publish(
                kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(quiet_referral, quiet_org, referred_at)
            )

            await wait_for(lambda: mailbox.messages, what="the arrival email")
            rcpt, content = mailbox.messages[0]
            message = message_from_bytes(content)
            assert rcpt == ["referrals@mail-friends.example"]
            assert message["Subject"] == "A new referral is waiting for you on socialrx"
            assert f"{WEB}/charity/inbox" in message.get_payload()
            assert referral_id not in content.decode()

            # The same event again (a redelivery) and the sweep on: still one arrival email.
            await publish_event(kafka.bootstrap_servers, ev.REFERRAL_CREATED, None, envelope=envelope)
            await wait_for(lambda: _rows(app, quiet_referral), what="the organisation without an address")
            assert (await _rows(app, quiet_referral))[0]["status"] in ("pending", "skipped")

            # Twelve days on, the reminder: once, however often the sweep runs.
            later = referred_at + domain.AUTO_DECLINE_AFTER - domain.REMINDER_BEFORE_DECLINE
            assert await emails.reminder_sweep(app.state.runtime, later - timedelta(minutes=1)) == 0
            for _ in range(3):
                await emails.reminder_sweep(app.state.runtime, later)
            await wait_for(lambda: len(mailbox.messages) >= 2, what="the reminder email")
            await asyncio.sleep(1.5)  # several sender rounds: nothing more may come
            subjects = [message_from_bytes(c)["Subject"] for _, c in mailbox.messages]
            assert subjects == [
                "A new referral is waiting for you on socialrx",
                "A referral will be declined automatically in 2 days",
            ]
            rows = await _rows(app, referral_id)
            assert [(r["reason"], r["status"]) for r in rows] == [("arrived", "sent"), ("reminder", "sent")]
            quiet = await _rows(app, quiet_referral)
            assert [(r["reason"], r["status"]) for r in quiet] == [("arrived", "skipped"), ("reminder", "skipped")]
            _assert_no_personal_details(mailbox.texts())
    finally:
        controller.stop()


async def test_mail_server_away_then_back_delivers_once(kafka, postgres, jwt_secret, kit) -> None:
    mailbox = Mailbox()
    port = free_port()  # nothing listens there yet
    async with running_service(
        build,
        Settings,
        database_url=postgres.new_database("dir"),
        kafka=kafka.bootstrap_servers,
        jwt_secret=jwt_secret,
        smtp_url=f"smtp://127.0.0.1:{port}",
        web_base_url=WEB,
        email_poll_interval_s=0.2,
        email_retry_base_s=0.3,
    ) as (app, client):
        org = await _organisation(client, jwt_secret, "hello@away-then-back.example")
        referral_id = "r-" + uuid.uuid4().hex[:8]
        await kit.publish(
            kafka.bootstrap_servers, ev.REFERRAL_CREATED, _created(referral_id, org, datetime.now(timezone.utc))
        )

        async def failed_twice():
            rows = await _rows(app, referral_id)
            return rows and rows[0]["attempts"] >= 2 and rows[0]["status"] == "pending"

        await wait_for(failed_twice, what="attempts while the mail server is away")
        assert (await _rows(app, referral_id))[0]["last_error"] == "ConnectionRefusedError"
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            await wait_for(lambda: mailbox.messages, timeout_s=30, what="the email once the server is back")
            await asyncio.sleep(1.5)
            assert len(mailbox.messages) == 1
            assert (await _rows(app, referral_id))[0]["status"] == "sent"
        finally:
            controller.stop()


async def test_two_senders_at_once_send_each_email_once(kafka, postgres, jwt_secret, kit) -> None:
    """Two replicas' senders on one database: SKIP LOCKED gives each row to one of them."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running_service(
            build,
            Settings,
            database_url=postgres.new_database("dir"),
            kafka=kafka.bootstrap_servers,
            jwt_secret=jwt_secret,
        ) as (app, client):
            org = await _organisation(client, jwt_secret, "both@replicas.example")
            now = datetime.now(timezone.utc)
            async with app.state.runtime.transaction() as session:
                for n in range(12):
                    await emails.enqueue(session, f"r-{n}-{uuid.uuid4().hex[:6]}", org, "arrived", now)
            senders = [
                emails.EmailSender(
                    app.state.runtime,
                    smtp_url=f"smtp://127.0.0.1:{port}",
                    web_base_url=WEB,
                    sender="socialrx <no-reply@socialrx.invalid>",
                )
                for _ in range(2)
            ]
            sent = await asyncio.gather(*(s.run_once() for s in senders))
            assert sum(sent) == 12 and len(mailbox.messages) == 12
            assert sum(await asyncio.gather(*(s.run_once() for s in senders))) == 0
    finally:
        controller.stop()


def test_smtp_urls() -> None:
    assert domain.smtp_target("smtp://mail.local:2525") == domain.SmtpTarget("mail.local", 2525, False, None, None)
    assert domain.smtp_target("smtps://u%40x:p%2Fw@smtp.example:465") == domain.SmtpTarget(
        "smtp.example", 465, True, "u@x", "p/w"
    )
    for bad in ("http://mail", "smtp://", "mail.example:25"):
        try:
            domain.smtp_target(bad)
        except ValueError:
            continue
        raise AssertionError(bad)

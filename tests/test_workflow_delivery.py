"""What leaves the system: reminder emails through a real SMTP server (aiosmtpd on
loopback) with a stable Message-ID, and signed outbound webhooks with an Idempotency-Key,
retried with back-off and parked when the receiver keeps failing."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from workflow_pack import START, open_helpdesk

from xrm import workflow
from xrm.workflow import Worker
from xrm.workflow.webhooks import verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (
                envelope.rcpt_tos,
                message_from_bytes(
                    envelope.original_content or envelope.content, policy=policy.default
                ),
            )
        )
        return "250 OK"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    yield inbox
    controller.stop()


def test_a_reminder_email_arrives_at_the_smtp_server(database, tmp_path, smtp_server):
    store, clock = open_helpdesk(database, tmp_path)
    try:
        ann = store.add_user("ann@example.com", "Ann", roles=["user"], locale="ru")
        store.save_settings({"mail_from": "crm@example.org"})
        worker = Worker(store, smtp=smtp_server.url)
        store.records("task", ann).create(
            {"subject": "Позвонить", "due": START + dt.timedelta(hours=1), "reminder": "15m"}
        )
        worker.run_once()
        assert smtp_server.messages == []
        clock.set(START + dt.timedelta(minutes=45))
        stats = worker.run_once()
        assert stats["sent"] == 1
        [(recipients, message)] = smtp_server.messages
        assert recipients == ["ann@example.com"]
        assert message["Subject"] == "Напоминание: Позвонить"
        assert message["From"] == "crm@example.org"
        [row] = workflow.mail.outbox(store)
        assert row["status"] == "sent" and row["sent_at"] == clock.now()
        assert message["Message-ID"] == row["message_id"] and row["message_id"].endswith(
            "@example.org>"
        )
        worker.run_once()
        assert len(smtp_server.messages) == 1  # sent once
    finally:
        store.close()


def test_an_unreachable_smtp_server_is_retried_later(database, tmp_path, smtp_server):
    store, clock = open_helpdesk(database, tmp_path)
    try:
        ann = store.add_user("ann@example.com")
        store.records("task", ann).create(
            {"subject": "x", "due": START + dt.timedelta(minutes=10), "reminder": "10m"}
        )
        down = Worker(store, smtp=f"smtp://127.0.0.1:{free_port()}", retry_base=10)
        down.run_once()
        [row] = workflow.mail.outbox(store)
        assert (
            row["status"] == "queued"
            and row["attempts"] == 1
            and "cannot connect" in row["last_error"]
        )
        assert row["due_at"] == clock.now() + dt.timedelta(seconds=30)
        up = Worker(store, smtp=smtp_server.url, retry_base=10)
        up.run_once()
        assert smtp_server.messages == []  # not before its retry time
        clock.advance(seconds=30)
        up.run_once()
        assert len(smtp_server.messages) == 1
        [row] = workflow.mail.outbox(store)
        assert (
            row["status"] == "sent"
            and smtp_server.messages[0][1]["Message-ID"] == row["message_id"]
        )
    finally:
        store.close()


class Receiver:
    """A webhook endpoint answering with scripted statuses and keeping what it got."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                payload = json.dumps({"ok": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


WEBHOOK = {
    "processes/notify_erp.yaml": """
        process: notify_erp
        entity: ticket
        on: {updated: [status]}
        if: [status, eq, resolved]
        steps:
          - webhook:
              url: "{{ record.hook_url }}"
              secret: {env: ERP_SECRET}
              body: {ticket: "{{ record.id }}", subject: "{{ record.subject }}"}
              retries: 2
              as: erp
          - set: {escalated: "{{ vars.erp.body.ok }}"}
    """
}


def test_a_webhook_is_signed_retried_with_back_off_and_succeeds(database, tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_SECRET", "erp-secret-123")
    receiver = Receiver([500, 200])
    store, clock = open_helpdesk(database, tmp_path, WEBHOOK)
    try:
        worker = Worker(store, retry_base=10)
        ticket = store.records("ticket").create({"subject": "Broken", "hook_url": receiver.url})
        store.records("ticket").update(ticket["id"], {"status": "resolved"})
        worker.run_once()
        assert len(receiver.requests) == 1
        [instance] = workflow.instances(store, process="notify_erp")
        assert instance["status"] == "waiting" and "500" in instance["error"]
        assert instance["due_at"] == clock.now() + dt.timedelta(seconds=10)
        clock.advance(seconds=10)
        worker.run_once()
        assert len(receiver.requests) == 2
        assert workflow.instance(store, instance["id"])["status"] == "done"
        assert store.records("ticket").get(ticket["id"])["escalated"] is True  # from the response
        (first_headers, first_body), (headers, body) = receiver.requests
        assert json.loads(body) == {"ticket": ticket["id"], "subject": "Broken"}
        assert (
            headers["idempotency-key"] == first_headers["idempotency-key"] == f"i{instance['id']}/0"
        )
        assert verify("erp-secret-123", body, headers["x-xrm-signature"])
        assert not verify("another-secret", body, headers["x-xrm-signature"])
    finally:
        store.close()
        receiver.close()


def test_a_webhook_that_keeps_failing_is_parked(database, tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_SECRET", "erp-secret-123")
    receiver = Receiver([500, 500, 500, 500])
    store, clock = open_helpdesk(database, tmp_path, WEBHOOK)
    try:
        worker = Worker(store, retry_base=10)
        ticket = store.records("ticket").create({"subject": "Broken", "hook_url": receiver.url})
        other = store.records("ticket").create({"subject": "Other"})
        store.records("ticket").update(ticket["id"], {"status": "resolved"})
        for _ in range(4):
            worker.run_once()
            clock.advance(minutes=5)
        [instance] = workflow.instances(store, process="notify_erp")
        parked = workflow.instance(store, instance["id"])
        assert parked["status"] == "failed" and "500" in parked["error"]
        assert len(receiver.requests) == 3  # the first call and two retries
        store.records("ticket").update(other["id"], {"priority": "high"})  # others still run
        worker.run_once()
        assert workflow.instances(store, process="priority_raised")
    finally:
        store.close()
        receiver.close()

"""A helpdesk pack for the workflow tests (tickets with an SLA, purchases needing approval),
and a clock the tests move by hand."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

from conftest import SOLUTIONS, write_pack

from xrm.storage.store import Clock

START = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)  # a Monday

FILES = {
    "entities/ticket.yaml": """
        entity: ticket
        title: subject
        fields:
          subject:   {type: text, required: true, max_length: 80}
          priority:  {type: choice, options: [low, normal, high, urgent], default: normal}
          status:    {type: choice, options: [new, open, waiting, resolved, closed], default: new}
          agent:     {type: user}
          first_response_at: {type: datetime}
          escalated: {type: boolean, default: false}
          counter:   {type: integer, default: 0}
          hook_url:  {type: text, max_length: 300}
          account:   {type: lookup, to: account}
        stages:
          field: status
          steps:
            new: {next: [open, waiting, resolved]}
            open: {next: [waiting, resolved]}
            waiting: {next: [open, resolved]}
            resolved: {next: [open, closed]}
            closed: {roles: [manager]}
    """,
    "entities/purchase.yaml": """
        entity: purchase
        title: title
        fields:
          title:  {type: text, required: true}
          amount: {type: money}
          status: {type: choice, options: [draft, approved, rejected, expired], default: draft}
          lines:  {type: children, entity: purchase_line, via: purchase}
    """,
    "entities/purchase_line.yaml": """
        entity: purchase_line
        fields:
          purchase: {type: lookup, to: purchase, required: true, on_delete: cascade}
          item:     {type: text}
          state:    {type: choice, options: [open, ordered], default: open}
    """,
    "templates/helpdesk.yaml": """
        templates:
          ticket_note:
            entity: ticket
            subject: {en: "Ticket {{ record.subject }}", ru: "Заявка {{ record.subject }}"}
            body: {en: "Priority {{ record.priority }}, was {{ old.priority }}", ru: "Приоритет {{ record.priority }}"}
          sla_warning:
            entity: ticket
            subject: "SLA warning: {{ record.subject }} ({{ sla.metric }})"
          sla_breach:
            entity: ticket
            subject: "SLA breached: {{ record.subject }} ({{ sla.metric }}, deadline {{ sla.deadline }})"
          purchase_done:
            entity: purchase
            subject: "Purchase {{ record.title }}: {{ approval.outcome }}"
    """,
    "processes/calendar.yaml": """
        calendars:
          office:
            time_zone: UTC
            week: {weekdays: ["09:00-17:00"]}
    """,
    "processes/ticket_sla.yaml": """
        sla: ticket_sla
        entity: ticket
        calendar: office
        priority_field: priority
        pause: [status, eq, waiting]
        warning: 75%
        metrics:
          first_response:
            done: [first_response_at, is_not_empty]
            targets: {urgent: 1h, high: 4h, "*": 8h}
          resolution:
            done: [status, in, [resolved, closed]]
            targets: {urgent: 4h, high: 16h, "*": 40h}
        on_warning:
          - notify: {to: agent, template: sla_warning, channels: [app]}
        on_breach:
          - if: [escalated, eq, false]
            then:
              - set: {escalated: true, priority: urgent}
              - notify: {to: role:manager, template: sla_breach}
    """,
    "processes/ticket_assign.yaml": """
        process: ticket_assign
        entity: ticket
        on: {created: true}
        if: [agent, is_empty]
        steps:
          - assign: {to: team:support, field: agent}
    """,
    "processes/priority_raised.yaml": """
        process: priority_raised
        entity: ticket
        on: {updated: [priority]}
        if: [priority, in, [high, urgent]]
        was: [priority, in, [low, normal]]
        steps:
          - notify: {to: agent, template: ticket_note}
    """,
    "processes/purchase_approval.yaml": """
        process: purchase_approval
        entity: purchase
        on: {created: true}
        if: [amount, gt, 1000]
        steps:
          - approval: {approvers: [user:boss1@example.com, user:boss2@example.com], require: all, timeout: 3d}
            approved:
              - set: {status: approved}
              - update: {related: lines, values: {state: ordered}}
            rejected:
              - set: {status: rejected}
            timed_out:
              - set: {status: expired}
          - notify: {to: owner, template: purchase_done, channels: [app]}
    """,
}


class MovableClock(Clock):
    def __init__(self, start: dt.datetime = START):
        self.current = start

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, **delta) -> dt.datetime:
        self.current += dt.timedelta(**delta)
        return self.current

    def set(self, moment: dt.datetime) -> None:
        self.current = moment


def helpdesk_pack(root: Path, extra: dict[str, str] | None = None) -> Path:
    files = {k: textwrap.dedent(v).lstrip() for k, v in {**FILES, **(extra or {})}.items()}
    return write_pack(root, "helpdesk", files, depends={"core": ">=1.0"})


def open_helpdesk(database, tmp_path: Path, extra: dict[str, str] | None = None, **options):
    clock = MovableClock()
    store = database.open(clock=clock, **options)
    store.install([SOLUTIONS / "core", helpdesk_pack(tmp_path, extra)])
    return store, clock

"""Workflow engine: processes (rules), stage flows, timers, reminders, approvals, SLAs,
notifications and email, run durably by workers from the outbox.

Entry points: ``Worker(store).run_once()`` / ``run_forever()``; ``start`` (a manual
button, the API); ``dry_run`` and ``diagram`` for a process definition; the inbox
functions (notifications, approvals); ``receive`` for inbound webhooks; ``dead_letters``
and ``retry_change`` for outbox changes the engine could not handle.
"""

from .consumer import retry_change
from .diagram import diagram
from .dryrun import dry_run
from .failures import dead_letter, dead_letters
from .inbox import decide, delegate, mark_read, notifications, pending_approvals, unread_count
from .instances import cancel, instance, instances, retry, stage_history, start
from .sla import clocks as sla_clocks
from .tables import ensure_tables
from .webhooks import receive as receive_webhook
from .worker import Worker

__all__ = [
    "Worker",
    "cancel",
    "dead_letter",
    "dead_letters",
    "decide",
    "delegate",
    "diagram",
    "dry_run",
    "ensure_tables",
    "instance",
    "instances",
    "mark_read",
    "notifications",
    "pending_approvals",
    "receive_webhook",
    "retry",
    "retry_change",
    "sla_clocks",
    "stage_history",
    "start",
    "unread_count",
]

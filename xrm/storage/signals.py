"""Signals the storage layer sends after a transaction commits (blinker).

Receivers get ``sender=store`` and keyword arguments ``entity``, ``record_id``,
``user_id`` and, for updates, ``changes`` (field -> (old, new)).  They run after the
commit, so a receiver never sees a change that could still roll back; anything that must
happen with the change itself belongs in the outbox, which the workflow engine reads.
"""

from blinker import Namespace

signals = Namespace()

record_created = signals.signal("record-created")
record_updated = signals.signal("record-updated")
record_deleted = signals.signal("record-deleted")
catalog_changed = signals.signal("catalog-changed")

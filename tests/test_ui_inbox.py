"""The inbox, approvals and manual process buttons through the test client, with a real
worker running the processes: the top bar's badge, notifications (newest first, links,
mark read, paging back), approve / reject / delegate continuing the waiting instance, a
wrong approver refused with a message, manual buttons only for the roles the trigger
names, bulk starts from a list, and CSRF on every new post.

One store per module (core, sales and a small pack with two manual processes); tests
compare counts before and after, so they do not depend on each other's leftovers.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import textwrap
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from babel.dates import format_datetime
from browser.support import ADMIN, PASSWORD, SELLER, SOLUTIONS, Client, world
from conftest import write_pack

from xrm import workflow
from xrm.workflow import Worker
from xrm.workflow import tables as W

MANAGER = "max@example.com"

PACK = {
    "templates/review.yaml": """
        templates:
          deal_escalated:
            entity: opportunity
            subject: {en: "Escalated: {{ record.name }}", ru: "Эскалация: {{ record.name }}"}
            body: {en: "{{ record.name }} needs attention.", ru: "{{ record.name }}: нужно внимание."}
          deal_reviewed:
            entity: opportunity
            subject: {en: "Review of {{ record.name }}: {{ approval.outcome }}", ru: "Проверка {{ record.name }}: {{ approval.outcome }}"}
    """,
    "processes/deal_review.yaml": """
        process: deal_review
        entity: opportunity
        label: {en: Deal review, ru: Проверка сделки}
        on: {manual: {label: {en: Request review, ru: Запросить проверку}}}
        steps:
          - approval: {approvers: ["user:max@example.com"], require: any}
            approved:
              - set: {next_step: Review approved}
            rejected:
              - set: {next_step: Review rejected}
          - notify: {to: owner, template: deal_reviewed, channels: [app]}
    """,
    "processes/escalate_deal.yaml": """
        process: escalate_deal
        entity: opportunity
        label: {en: Escalate deal, ru: Эскалировать сделку}
        on: {manual: {roles: [manager]}}
        steps:
          - set: {next_step: Escalated}
          - notify: {to: owner, template: deal_escalated, channels: [app]}
    """,
    "processes/retired.yaml": """
        process: retired_review
        entity: opportunity
        label: Retired review
        enabled: false
        on: {manual: true}
        steps:
          - stop: true
    """,
}


def install_review_pack(store, root: Path) -> int:
    """Install the pack above next to core and sales, with its approver; returns the
    manager's id (the approver of ``deal_review``, in the seller's team)."""
    files = {k: textwrap.dedent(v).lstrip() for k, v in PACK.items()}
    pack = write_pack(root, "reviews", files, depends={"core": ">=1.0", "sales": ">=1.0"})
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales", pack])
    return store.add_user(
        MANAGER, "Max Manager", password=PASSWORD, roles=["manager"], teams=["east"]
    )


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("ui-inbox")) as built:
        built.manager = install_review_pack(built.store, tmp_path_factory.mktemp("packs"))
        yield built


@pytest.fixture
def manager(app):
    return Client(app).login(MANAGER)


def text(response) -> str:
    return response.get_data(as_text=True)


def run(w) -> None:
    Worker(w.store).run_once()


def deal(w, name: str, owner=None) -> dict:
    owner = owner or w.seller
    return w.store.records("opportunity", owner).create(
        {
            "name": name,
            "account": w.acme["id"] if owner == w.seller else w.initech["id"],
            "amount": Decimal("100"),
            "close_date": dt.date.today() + dt.timedelta(days=10),
            "owner": owner,
        }
    )


def badge(client) -> tuple[int, int]:
    """(unread, approvals) as the top bar's badge shows them."""
    page = text(client.get("/inbox/badge"))
    unread = re.search(r'data-unread="(\d+)"', page).group(1)
    approvals = re.search(r'data-approvals="(\d+)"', page).group(1)
    return int(unread), int(approvals)


def toasts(page: str) -> list[str]:
    found = re.findall(r'<div class="toast-body">([^<]*)</div>', page)
    return [html.unescape(m.strip()) for m in found]


def approval_of(w, user_id: int, record_id: int) -> dict:
    [row] = [a for a in workflow.pending_approvals(w.store, user_id) if a["record_id"] == record_id]
    return row


def next_step(w, record_id: int):
    return w.store.records("opportunity").get(record_id)["next_step"]


def request_review(w, seller, record_id: int) -> dict:
    """The seller presses *Request review*; the worker asks the manager."""
    response = seller.post(f"/r/opportunity/{record_id}/start", {"process": "deal_review"})
    assert response.status_code == 303
    run(w)
    return approval_of(w, w.manager, record_id)


# ------------------------------------------------------------------------ the badge
def test_the_badge_is_on_every_page_and_counts_a_notification_of_a_process_run(w, seller, manager):
    home = text(seller.get("/"))
    assert 'id="inbox-badge"' in home and 'hx-trigger="every 60s"' in home
    fragment = seller.get("/inbox/badge")
    assert fragment.status_code == 200 and fragment.headers["Cache-Control"] == "no-store"
    assert "<html" not in text(fragment)  # a fragment for htmx, not a page
    before = badge(seller)
    assert before == (
        workflow.unread_count(w.store, w.seller),
        len(workflow.pending_approvals(w.store, w.seller)),
    )
    record = deal(w, "Badge deal")
    response = manager.post(f"/r/opportunity/{record['id']}/start", {"process": "escalate_deal"})
    assert response.status_code == 303
    assert response.location.endswith(f"/r/opportunity/{record['id']}")  # stays on the record
    assert "Started: Escalate deal." in toasts(text(manager.get(response.location)))
    assert badge(seller) == before  # queued, not run yet
    run(w)
    assert next_step(w, record["id"]) == "Escalated"  # the process's own effect
    assert badge(seller) == (before[0] + 1, before[1])
    assert f'data-unread="{before[0] + 1}"' in text(seller.get("/"))  # rendered with the page


def test_the_badge_caps_its_number(w, app):
    user = w.store.add_user("busy@example.com", "Busy Bee", password=PASSWORD, roles=["user"])
    add_notifications(w, user, 120)
    client = Client(app).login("busy@example.com")
    page = text(client.get("/"))
    assert 'data-testid="inbox-unread">99+<' in page
    assert badge(client) == (120, 0)


def add_notifications(w, user_id: int, count: int) -> list[int]:
    """Notifications written straight into the engine's table (paging needs many)."""
    now = w.store.clock.now()
    rows = [
        {
            "user_id": user_id,
            "title": f"Note {index}",
            "body": f"Body {index}",
            "key": f"test/{user_id}/{index}",
            "created_at": now + dt.timedelta(seconds=index),
        }
        for index in range(1, count + 1)
    ]
    with w.store.engine.begin() as conn:
        conn.execute(W.notifications.insert(), rows)
        return (
            conn.execute(
                sa.select(W.notifications.c.id)
                .where(W.notifications.c.user_id == user_id)
                .order_by(W.notifications.c.id)
            )
            .scalars()
            .all()
        )


# ------------------------------------------------------------------------ notifications
def test_notifications_newest_first_with_links_times_and_mark_read(w, app, seller, manager):
    first, second = deal(w, "Inbox first"), deal(w, "Inbox second")
    for record in (first, second):
        manager.post(f"/r/opportunity/{record['id']}/start", {"process": "escalate_deal"})
    run(w)
    page = text(seller.get("/inbox"))
    titles = re.findall(r'data-testid="notification-title">([^<]*)<', page)
    assert titles.index("Escalated: Inbox second") < titles.index("Escalated: Inbox first")
    assert (
        f'href="/r/opportunity/{second["id"]}" data-testid="notification-record">Inbox second<'
        in page
    )
    newest = workflow.notifications(w.store, w.seller)[0]
    assert newest["title"] == "Escalated: Inbox second"
    # the time in the seller's zone (Europe/Moscow) and language
    when = newest["created_at"]
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    exact = format_datetime(when, format="medium", tzinfo=ZoneInfo("Europe/Moscow"), locale="en")
    assert f'title="{exact}"' in page
    assert f'data-testid="notification-{newest["id"]}" data-unread="true"' in page
    assert "xrm-unread" in page
    # another user cannot mark it read
    other = Client(app).login(ADMIN)
    assert other.post(f"/inbox/{newest['id']}/read").status_code == 303
    assert workflow.notifications(w.store, w.seller)[0]["read_at"] is None
    unread, approvals = badge(seller)
    response = seller.post(f"/inbox/{newest['id']}/read", htmx=True)
    assert response.status_code == 200
    swapped = text(response)
    assert f'data-testid="notification-{newest["id"]}" data-unread="false"' in swapped
    assert 'id="inbox-badge"' in swapped and f'data-unread="{unread - 1}"' in swapped
    assert badge(seller) == (unread - 1, approvals)
    response = seller.post("/inbox/read-all")
    assert response.status_code == 303 and response.location.endswith("/inbox")
    page = text(seller.get("/inbox"))
    assert f"{unread - 1} notifications marked read." in toasts(page)
    assert 'data-unread="true"' not in page and 'data-testid="mark-all-read"' not in page
    assert badge(seller) == (0, approvals)


def test_notifications_page_back_with_before(w, app):
    user = w.store.add_user(
        "pager@example.com", "Paula Pager", password=PASSWORD, roles=["user"], locale="ru"
    )
    ids = add_notifications(w, user, 45)
    client = Client(app).login("pager@example.com")
    page = text(client.get("/inbox"))
    assert "Входящие" in page and "Отметить все прочитанными" in page  # the user's language
    shown = [int(i) for i in re.findall(r'data-testid="notification-(\d+)"', page)]
    assert shown == sorted(ids, reverse=True)[:30]
    older = re.search(r'href="/inbox\?before=(\d+)" data-testid="older"', page)
    assert older and int(older.group(1)) == shown[-1]
    page = text(client.get(f"/inbox?before={older.group(1)}"))
    shown = [int(i) for i in re.findall(r'data-testid="notification-(\d+)"', page)]
    assert shown == sorted(ids, reverse=True)[30:]
    assert 'data-testid="older"' not in page and 'data-testid="newest"' in page
    # marking one read on an older page comes back to that page
    response = client.post(f"/inbox/{shown[0]}/read", {"before": older.group(1)})
    assert response.location.endswith(f"/inbox?before={older.group(1)}")


# ------------------------------------------------------------------------ approvals
def test_approve_continues_the_waiting_instance(w, seller, manager):
    record = deal(w, "Approve me")
    unread, approvals = badge(manager)
    response = seller.post(
        f"/r/opportunity/{record['id']}/start", {"process": "deal_review"}, htmx=True
    )
    assert response.status_code == 200
    assert toasts(text(response)) == ["Started: Request review."]  # a toast for #toasts
    run(w)
    pending = approval_of(w, w.manager, record["id"])
    assert badge(manager) == (unread + 1, approvals + 1)  # asked in-app, and waiting
    page = text(manager.get("/inbox"))
    card = page[page.index(f'data-testid="approval-{pending["id"]}"') :]
    assert "Deal review" in card[:2000]
    assert (
        f'href="/r/opportunity/{record["id"]}" data-testid="approval-record">Approve me<'
        in card[:2000]
    )
    response = manager.post(
        f"/inbox/approvals/{pending['id']}/decide",
        {"decision": "approved", "comment": "Looks fine"},
        htmx=True,
    )
    assert response.status_code == 200
    answer = text(response)
    assert "Approved." in toasts(answer)
    assert f'data-testid="approval-{pending["id"]}"' not in answer
    assert f'data-unread="{unread}" data-approvals="{approvals}"' in answer  # the badge, OOB
    assert badge(manager) == (unread, approvals)  # the request was answered: read too
    with w.store.engine.connect() as conn:
        stored = conn.execute(
            sa.select(W.approvals.c.decision, W.approvals.c.comment).where(
                W.approvals.c.id == pending["id"]
            )
        ).one()
    assert tuple(stored) == ("approved", "Looks fine")
    run(w)
    assert next_step(w, record["id"]) == "Review approved"
    assert workflow.notifications(w.store, w.seller)[0]["title"] == "Review of Approve me: approved"
    [instance] = workflow.instances(w.store, process="deal_review", record_id=record["id"])
    assert instance["status"] == "done" and instance["user_id"] == w.seller


def test_reject_continues_the_waiting_instance(w, seller, manager):
    record = deal(w, "Reject me")
    pending = request_review(w, seller, record["id"])
    response = manager.post(
        f"/inbox/approvals/{pending['id']}/decide", {"decision": "rejected", "comment": ""}
    )
    assert response.status_code == 303
    assert "Rejected." in toasts(text(manager.get("/inbox")))
    run(w)
    assert next_step(w, record["id"]) == "Review rejected"
    assert workflow.notifications(w.store, w.seller)[0]["title"] == "Review of Reject me: rejected"


def test_delegate_then_the_delegate_decides(w, seller, manager, admin):
    record = deal(w, "Delegate me")
    pending = request_review(w, seller, record["id"])
    # no user, an unknown user: refused with a message, nothing changes
    for chosen in ("", "999999"):
        manager.post(f"/inbox/approvals/{pending['id']}/delegate", {"to": chosen})
        assert "Choose an active user to delegate to." in toasts(text(manager.get("/inbox")))
    # to an approver of the step already (themselves): the engine's reason
    manager.post(f"/inbox/approvals/{pending['id']}/delegate", {"to": str(w.manager)})
    assert (
        "The approval was not delegated: that user is an approver of this step already"
        in toasts(text(manager.get("/inbox")))
    )
    page = text(manager.get("/inbox"))
    assert 'data-xrm-lookup="/ui/lookup-users"' in page  # the users' type-ahead
    response = manager.post(
        f"/inbox/approvals/{pending['id']}/delegate", {"to": str(w.admin), "comment": "Yours"}
    )
    assert response.status_code == 303
    assert "Delegated to Ada Admin." in toasts(text(manager.get("/inbox")))
    assert all(
        a["record_id"] != record["id"] for a in workflow.pending_approvals(w.store, w.manager)
    )
    mine = approval_of(w, w.admin, record["id"])
    page = text(admin.get("/inbox"))
    assert f'data-testid="approval-{mine["id"]}"' in page and "Delegated by Max Manager" in page
    admin.post(f"/inbox/approvals/{mine['id']}/decide", {"decision": "approved"})
    run(w)
    assert next_step(w, record["id"]) == "Review approved"


def test_a_wrong_approver_is_refused_with_a_message(w, seller, manager):
    record = deal(w, "Not yours")
    pending = request_review(w, seller, record["id"])
    response = seller.post(f"/inbox/approvals/{pending['id']}/decide", {"decision": "approved"})
    assert response.status_code == 303
    assert "The decision was not recorded: no such approval for this user" in toasts(
        text(seller.get("/inbox"))
    )
    response = seller.post(
        f"/inbox/approvals/{pending['id']}/decide", {"decision": "approved"}, htmx=True
    )
    assert response.status_code == 200  # a toast, not an error page
    assert "The decision was not recorded: no such approval for this user" in toasts(text(response))
    seller.post(f"/inbox/approvals/{pending['id']}/delegate", {"to": str(w.seller)})
    assert "The approval was not delegated: no such approval for this user" in toasts(
        text(seller.get("/inbox"))
    )
    manager.post(f"/inbox/approvals/{pending['id']}/decide", {"decision": "maybe"})
    assert "Choose Approve or Reject." in toasts(text(manager.get("/inbox")))
    assert approval_of(w, w.manager, record["id"])["decision"] is None  # still pending
    manager.post(f"/inbox/approvals/{pending['id']}/decide", {"decision": "rejected"})
    manager.post(f"/inbox/approvals/{pending['id']}/decide", {"decision": "approved"})
    assert "The decision was not recorded: already rejected" in toasts(text(manager.get("/inbox")))
    run(w)
    assert next_step(w, record["id"]) == "Review rejected"


# ------------------------------------------------------------------------ manual buttons
def test_manual_buttons_follow_the_triggers_roles(w, seller, manager, admin, reader):
    record = deal(w, "Buttons")
    url = f"/r/opportunity/{record['id']}"
    page = text(seller.get(url))  # a user: the process open to everyone, and sales' own
    assert 'data-testid="start-deal_review"' in page and "Request review" in page
    assert 'data-testid="start-opportunity_review"' in page and "Request deal review" in page
    assert 'data-testid="start-escalate_deal"' not in page
    assert 'data-testid="actions-menu"' in page  # several processes: a menu
    assert "retired_review" not in page  # switched off
    for client in (manager, admin):  # a manager by role, an administrator always
        page = text(client.get(url))
        assert 'data-testid="actions-menu"' in page
        assert 'data-testid="start-deal_review"' in page
        assert 'data-testid="start-escalate_deal"' in page and "Escalate deal" in page
    assert 'data-testid="process-actions"' not in text(reader.get(url))  # may not update
    assert 'data-testid="process-actions"' not in text(seller.get("/r/opportunity/new"))
    assert 'data-testid="process-actions"' not in text(
        seller.get(f"/r/account/{w.acme['id']}")
    )  # no manual process for accounts
    # a post around the missing button is refused by the engine, with its reason
    response = seller.post(f"{url}/start", {"process": "escalate_deal"}, htmx=True)
    assert toasts(text(response)) == [
        "Escalate deal was not started: only manager may start 'escalate_deal'"
    ]
    response = seller.post(f"{url}/start", {"process": "task_reminder"})  # a task's process
    assert response.location.endswith(url)
    [message] = toasts(text(seller.get(response.location)))
    assert message.endswith("was not started: there is no such process for Opportunity records")
    reader.post("/preferences", {"locale": "en"})
    response = reader.post(f"{url}/start", {"process": "deal_review"})
    assert response.status_code == 303
    assert "Request review was not started: you may not update opportunity records" in toasts(
        text(reader.get(response.location))
    )
    reader.post("/preferences", {"locale": "ru"})
    assert workflow.instances(w.store, record_id=record["id"], entity="opportunity") == []


def test_russian_labels_of_manual_processes(w, app):
    client = Client(app).login(SELLER)
    client.post("/preferences", {"locale": "ru"})
    try:
        record = deal(w, "По-русски")
        page = text(client.get(f"/r/opportunity/{record['id']}"))
        assert "Запросить проверку" in page  # the trigger's own label, localized
        response = client.post(
            f"/r/opportunity/{record['id']}/start", {"process": "escalate_deal"}, htmx=True
        )
        assert toasts(text(response)) == [
            "«Эскалировать сделку» не запущен: запускать «escalate_deal» могут только роли: manager"
        ]
    finally:
        client.post("/preferences", {"locale": "en"})


# ------------------------------------------------------------------------ bulk starts
def test_bulk_start_from_a_list(w, seller, manager, admin):
    first, second = deal(w, "Bulk review A"), deal(w, "Bulk review B")
    hidden = deal(w, "Admin's own", owner=w.admin)  # the seller may not even read it
    page = text(seller.get("/views/open_opportunities"))
    assert 'data-testid="bulk-start-deal_review"' in page
    assert 'data-testid="bulk-start-escalate_deal"' not in page
    assert 'data-testid="bulk-actions"' in text(manager.get("/views/open_opportunities"))
    form = [
        ("ids", str(first["id"])),
        ("ids", str(second["id"])),
        ("ids", str(hidden["id"])),
        ("action", "start:deal_review"),
    ]
    response = seller.post("/views/open_opportunities/bulk", form, htmx=True)
    assert response.status_code == 204
    assert response.headers["HX-Redirect"].startswith("/views/open_opportunities")
    messages = toasts(text(seller.get("/views/open_opportunities")))
    assert "Request review started for 2 records." in messages
    assert (
        f"Request review was refused for 1 records: opportunity {hidden['id']} not found"
        in messages
    )
    started = workflow.instances(w.store, process="deal_review")
    assert {i["record_id"] for i in started} >= {first["id"], second["id"]}
    assert hidden["id"] not in {i["record_id"] for i in started}
    run(w)
    for record in (first, second):
        assert approval_of(w, w.manager, record["id"])["decision"] is None
    # a process the seller may not start: every record refused, nothing queued
    seller.post(
        "/views/open_opportunities/bulk",
        [("ids", str(first["id"])), ("action", "start:escalate_deal")],
    )
    messages = toasts(text(seller.get("/views/open_opportunities")))
    assert (
        "Escalate deal was refused for 1 records: only manager may start 'escalate_deal'"
        in messages
    )
    assert workflow.instances(w.store, process="escalate_deal", record_id=first["id"]) == []


# ------------------------------------------------------------------------ CSRF
def test_every_new_post_needs_a_csrf_token(w, seller, manager):
    record = deal(w, "Forged")
    pending = request_review(w, seller, record["id"])
    mine = workflow.notifications(w.store, w.manager)[0]
    unread = badge(manager)
    endpoints = [
        (f"/inbox/{mine['id']}/read", {}),
        ("/inbox/read-all", {}),
        (f"/inbox/approvals/{pending['id']}/decide", {"decision": "approved"}),
        (f"/inbox/approvals/{pending['id']}/delegate", {"to": str(w.admin)}),
        (f"/r/opportunity/{record['id']}/start", {"process": "escalate_deal"}),
    ]
    for url, data in endpoints:
        for htmx in (False, True):
            response = manager.post(url, data, csrf=False, htmx=htmx)
            assert response.status_code == 400, url
            assert "form expired" in text(response)
    assert badge(manager) == unread
    assert approval_of(w, w.manager, record["id"])["decision"] is None
    assert workflow.instances(w.store, process="escalate_deal", record_id=record["id"]) == []


def test_inbox_and_record_forms_carry_csrf_tokens(w, seller, manager):
    record = deal(w, "Forms")
    request_review(w, seller, record["id"])
    form_tag = re.compile(r"<form\b[^>]*>", re.S)
    for url in ("/inbox", f"/r/opportunity/{record['id']}", "/views/open_opportunities"):
        page = text(manager.get(url))
        posts = 0
        for match in form_tag.finditer(page):
            tag = match.group(0)
            if 'method="post"' not in tag:
                continue
            posts += 1
            body = page[match.end() : page.index("</form>", match.end())]
            assert 'name="csrf_token"' in body, (url, tag)
            assert "novalidate" in tag, (url, tag)
        assert posts, url


def test_the_inbox_needs_a_signed_in_user(app):
    anonymous = app.test_client()
    assert anonymous.get("/inbox").status_code == 302
    response = anonymous.get("/inbox/badge", headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/login")

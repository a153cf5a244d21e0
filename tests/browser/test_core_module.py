"""The core module in a real browser: a meeting made by clicking a half hour of the week
view lands where it was clicked (in the user's time zone); the account hierarchy opens node
by node (mouse and keyboard) and a record page leads back into it; an account's timeline
shows a call about one of its contacts."""

from __future__ import annotations

import datetime as dt

from .support import SELLER, swapped_in


def _next_monday() -> dt.date:
    today = dt.date.today()
    return today + dt.timedelta(days=7 - today.weekday())


def test_week_view_click_creates_a_meeting_where_it_was_clicked(visit, site):
    monday = _next_monday()
    wednesday = monday + dt.timedelta(days=2)
    page = visit.login(SELLER)
    visit.go(f"/calendar?mode=week&date={monday.isoformat()}", "week")
    assert page.locator('[data-testid="mode-week"]').get_attribute("aria-current") == "page"
    slot = page.locator(f'[data-testid="slot-{wednesday.isoformat()}-1400"]')
    slot.click()
    dialog = page.locator('[data-testid="quick-dialog"]')
    # its Save posts through htmx once htmx has settled the dialog's form
    swapped_in(dialog.locator('[data-testid="quick-create-form"]'))
    visit.shot("quick meeting")
    assert dialog.locator("#q-f-starts_at").input_value() == f"{wednesday.isoformat()}T14:00"
    assert dialog.locator("#q-f-ends_at").input_value() == f"{wednesday.isoformat()}T15:00"
    dialog.locator("#q-f-subject").fill("Design review on the grid")
    with page.expect_navigation():  # the calendar reloads with the meeting placed
        dialog.locator('[data-testid="quick-save"]').click()
    page.wait_for_load_state("networkidle")
    visit.shot("meeting placed")
    made = (
        site.store.records("meeting")
        .query(
            filter=["subject", "eq", "Design review on the grid"],
            fields=["starts_at", "ends_at", "owner"],
        )
        .rows
    )
    assert len(made) == 1
    # 14:00 in Moscow, where the seller works, is 11:00 UTC
    assert made[0]["starts_at"] == dt.datetime.combine(wednesday, dt.time(11, 0), dt.UTC)
    assert made[0]["owner"] == site.seller
    event = page.locator('[data-testid="event"]', has_text="Design review on the grid")
    assert (
        event.get_attribute("data-start") == "14:00" and event.get_attribute("data-end") == "15:00"
    )
    day = page.locator(f'.xrm-tg-day[data-date="{wednesday.isoformat()}"]')
    assert day.locator('[data-testid="event"]', has_text="Design review").count() == 1
    # it sits on the 14:00 half hour and is two half hours tall
    slot_box = page.locator(f'[data-testid="slot-{wednesday.isoformat()}-1400"]').bounding_box()
    event_box = event.bounding_box()
    assert abs(event_box["y"] - slot_box["y"]) < 3
    assert abs(event_box["height"] - 2 * slot_box["height"]) < 4
    # the day view shows it too; the arrows move between half hours and days
    page.click(f'[data-testid="day-{wednesday.isoformat()}"] a')
    page.wait_for_load_state("networkidle")
    visit.shot("day")
    assert page.locator('[data-testid="event"]', has_text="Design review").count() == 1
    visit.go(f"/calendar?mode=week&date={monday.isoformat()}", "week again")
    first = page.locator(f'[data-testid="slot-{monday.isoformat()}-0800"]')
    first.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.dataset.testid")
    assert focused == f"slot-{(monday + dt.timedelta(days=1)).isoformat()}-0830"


def test_account_hierarchy_opens_node_by_node(visit, site):
    accounts = site.store.records("account", site.seller)
    europe = accounts.create({"name": "Acme Europe", "parent": site.acme["id"]})
    berlin = accounts.create({"name": "Acme Berlin", "parent": europe["id"]})
    page = visit.login(SELLER)
    visit.go("/views/account_hierarchy", "hierarchy")
    tree = page.locator('[data-testid="tree"]')
    acme = tree.locator(f'[data-testid="tree-node"][data-id="{site.acme["id"]}"]')
    assert acme.get_attribute("aria-expanded") == "false"
    assert not tree.get_by_text("Acme Europe").is_visible()
    acme.locator('[data-testid="tree-toggle"]').first.click()
    tree.get_by_text("Acme Europe").wait_for()
    assert acme.get_attribute("aria-expanded") == "true"
    node = tree.locator(f'[data-testid="tree-node"][data-id="{europe["id"]}"]')
    toggle = node.locator('[data-testid="tree-toggle"]').first
    toggle.focus()
    page.keyboard.press("ArrowRight")  # the keyboard opens a node as the mouse does
    tree.get_by_text("Acme Berlin").wait_for()
    visit.shot("opened")
    page.keyboard.press("ArrowLeft")
    tree.get_by_text("Acme Berlin").wait_for(state="hidden")
    assert node.get_attribute("aria-expanded") == "false"
    # a record page shows its place and leads back into the tree, opened at it
    visit.go(f"/r/account/{berlin['id']}", "berlin")
    path = page.locator('[data-testid="hierarchy-path"]')
    assert path.inner_text().split("\n")[:2] == ["Acme Corporation", "Acme Europe"]
    page.click('[data-testid="show-in-tree"]')
    page.wait_for_load_state("networkidle")
    visit.shot("shown in tree")
    focused = page.locator(".xrm-tree-focus")
    assert focused.get_attribute("data-id") == str(berlin["id"])
    assert focused.is_visible()


def test_account_timeline_shows_a_contacts_call(visit, site):
    site.store.records("call", site.seller).create(
        {
            "subject": "Call with Jane about the renewal",
            "regarding": {"entity": "contact", "id": site.jane["id"]},
            "direction": "inbound",
        }
    )
    page = visit.login(SELLER)
    visit.go(f"/r/account/{site.acme['id']}", "account")
    timeline = page.locator('[data-testid="timeline"]')
    entry = timeline.locator(
        '[data-testid="timeline-activity"]', has_text="Call with Jane about the renewal"
    )
    entry.wait_for()
    visit.shot("timeline")
    assert "Jane Doe" in entry.locator('[data-testid="timeline-about"]').inner_text()
    entry.get_by_role("link", name="Call with Jane about the renewal").click()
    page.wait_for_load_state("networkidle")
    assert (
        "Call with Jane about the renewal"
        in page.locator('[data-testid="record-title"]').inner_text()
    )

"""A many-to-many related list links existing records and unlinks them (a guest list's
guests, a related list on its generated form), through the real WSGI application: several
at once, twice harmlessly, with an audit row per change and a process watching the field
run by it; and the refusals, which change nothing: a target the user may not read, no
update permission on the list, a list the user may not read, a post without its CSRF
token, text that is no record id."""

from __future__ import annotations

import html
import re

import pytest
from browser.support import world
from conftest import write_pack

from xrm.storage.links import change_links
from xrm.storage.records import ValidationFailed
from xrm.workflow import Worker

#: An entity without a form of its own: the generated one lists its guests as a related list.
GUEST_LIST = """
entity: guest_list
label: {en: Guest list, ru: Список гостей}
plural: {en: Guest lists, ru: Списки гостей}
title: name
fields:
  name:   {type: text, required: true, label: {en: Name, ru: Название}}
  guests: {type: many_to_many, to: contact, label: {en: Guests, ru: Гости}}
  invitations_due: {type: boolean, default: false, label: {en: Invitations due, ru: Пора приглашать}}
"""

#: A process that watches the guests alone (not the name): it runs when a link changes.
INVITE = """
process: invite_guests
entity: guest_list
on: {updated: [guests]}
steps:
  - set: {invitations_due: true}
"""


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("related-links")
    pack = write_pack(
        root,
        "guests",
        {"entities/guest_list.yaml": GUEST_LIST, "processes/invite.yaml": INVITE},
        depends={"core": ">=1.0"},
    )
    with world(root) as built:
        store = built.store
        store.install([pack])
        contacts = store.records("contact", built.seller)
        built.ann, built.bob, built.cy = (
            contacts.create({"first_name": first, "last_name": "Linked", "owner": built.seller})
            for first in ("Ann", "Bob", "Cy")
        )
        # the administrator's own contact: a plain user outside their team may not read it
        built.hidden = store.records("contact", built.admin).create(
            {"first_name": "Hal", "last_name": "Hidden", "owner": built.admin}
        )
        built.admins_list = store.records("guest_list", built.admin).create(
            {"name": "Board", "owner": built.admin}
        )
        yield built


def text(response) -> str:
    return response.get_data(as_text=True)


def new_list(w, name: str) -> dict:
    return w.store.records("guest_list", w.seller).create({"name": name, "owner": w.seller})


def guests(w, list_id: int) -> list[int]:
    return w.store.records("guest_list").get(list_id)["guests"]


def guest_audit(w, list_id: int) -> list[dict]:
    return [h for h in w.store.records("guest_list").history(list_id) if h["field"] == "guests"]


def urls(list_id: int) -> tuple[str, str]:
    base = f"/r/guest_list/{list_id}/related/guests"
    return f"{base}/add", f"{base}/remove"


def test_several_linked_at_once_then_one_unlinked_each_audited(w, seller):
    board = new_list(w, "Newsletter")
    add, remove = urls(board["id"])
    response = seller.post(add, [("ids", str(w.ann["id"])), ("ids", str(w.bob["id"]))])
    assert response.status_code == 303, text(response)[:500]
    assert guests(w, board["id"]) == sorted([w.ann["id"], w.bob["id"]])
    page = text(seller.get(response.headers["Location"]))
    assert "Added to Guests: 2." in page
    audit = guest_audit(w, board["id"])
    assert [(h["old"], h["new"], h["user_id"]) for h in audit] == [
        ([], sorted([w.ann["id"], w.bob["id"]]), w.seller)
    ]

    response = seller.post(remove, {"ids": str(w.ann["id"])})
    assert response.status_code == 303
    assert guests(w, board["id"]) == [w.bob["id"]]
    # unlinked, not deleted
    assert w.store.records("contact").get(w.ann["id"])["first_name"] == "Ann"
    assert "The records themselves are kept." in text(seller.get(response.headers["Location"]))
    assert [(h["old"], h["new"]) for h in guest_audit(w, board["id"])][-1] == (
        sorted([w.ann["id"], w.bob["id"]]),
        [w.bob["id"]],
    )


def test_linking_twice_is_harmless_and_writes_nothing(w, seller):
    board = new_list(w, "Call list")
    add, remove = urls(board["id"])
    assert seller.post(add, {"ids": str(w.cy["id"])}).status_code == 303
    version = w.store.records("guest_list").get(board["id"])["version"]
    response = seller.post(add, {"ids": str(w.cy["id"])}, htmx=True)
    assert response.status_code == 200
    assert "Already in Guests." in text(response)
    assert guests(w, board["id"]) == [w.cy["id"]]
    assert w.store.records("guest_list").get(board["id"])["version"] == version
    assert len(guest_audit(w, board["id"])) == 1
    # taking out what is not there is as harmless
    assert "Not in Guests." in text(seller.post(remove, {"ids": str(w.ann["id"])}, htmx=True))
    assert guests(w, board["id"]) == [w.cy["id"]]


def test_a_target_the_user_may_not_read_is_refused_and_nothing_changes(w, seller):
    board = new_list(w, "Guests")
    add, _remove = urls(board["id"])
    seller.post(add, {"ids": str(w.ann["id"])})
    version = w.store.records("guest_list").get(board["id"])["version"]
    # one readable and one hidden contact: neither is linked
    response = seller.post(add, [("ids", str(w.bob["id"])), ("ids", str(w.hidden["id"]))])
    assert response.status_code == 422
    assert "Guests: a linked record does not exist" in text(response)
    # the same words as for a record that does not exist at all
    missing = seller.post(add, {"ids": "987654"})
    assert missing.status_code == 422
    assert "Guests: a linked record does not exist" in text(missing)
    garbage = seller.post(add, {"ids": "Bob"})
    assert garbage.status_code == 422
    assert "Bob is not a record id." in text(garbage)
    empty = seller.post(add, {"ids": ""})
    assert empty.status_code == 422
    assert "Choose at least one record." in text(empty)
    assert guests(w, board["id"]) == [w.ann["id"]]
    assert w.store.records("guest_list").get(board["id"])["version"] == version
    assert len(guest_audit(w, board["id"])) == 1


def test_users_who_may_not_update_the_list_are_refused(w, seller, reader):
    board = new_list(w, "Read me")
    add, remove = urls(board["id"])
    seller.post(add, {"ids": str(w.ann["id"])})
    # the read-only role reads the list but may not change it: no controls, and a post is 403
    assert 'data-testid="link-form-guests"' not in text(
        reader.get(f"/r/guest_list/{board['id']}/related/guests?links=1")
    )
    assert reader.post(add, {"ids": str(w.bob["id"])}).status_code == 403
    assert reader.post(remove, {"ids": str(w.ann["id"])}).status_code == 403
    # a list the user may not read is answered as missing
    other_add, _ = urls(w.admins_list["id"])
    assert seller.post(other_add, {"ids": str(w.ann["id"])}).status_code == 404
    assert guests(w, board["id"]) == [w.ann["id"]]
    assert guests(w, w.admins_list["id"]) == []
    assert len(guest_audit(w, board["id"])) == 1


def test_a_post_without_its_csrf_token_is_refused(w, seller):
    board = new_list(w, "Forged")
    add, _remove = urls(board["id"])
    response = seller.post(add, {"ids": str(w.ann["id"])}, csrf=False)
    assert response.status_code == 400
    assert guests(w, board["id"]) == []


def test_the_read_view_offers_the_controls_the_form_does_not(w, seller):
    board = new_list(w, "Shown")
    seller.post(urls(board["id"])[0], {"ids": str(w.ann["id"])})
    view = text(seller.get(f"/r/guest_list/{board['id']}"))
    lazy = f"/r/guest_list/{board['id']}/related/guests?links=1"
    assert f'hx-get="{lazy}"' in view
    listed = text(seller.get(lazy))
    assert 'data-testid="link-form-guests"' in listed
    assert 'data-xrm-lookup="/ui/lookup/contact"' in listed
    assert f'data-testid="unlink-{w.ann["id"]}"' in listed
    assert 'name="csrf_token"' in listed
    # the edit form holds the related list inside its own form: no nested forms there
    edit = text(seller.get(f"/r/guest_list/{board['id']}/edit"))
    assert "related/guests?links=1" not in edit
    plain = text(seller.get(f"/r/guest_list/{board['id']}/related/guests"))
    assert 'data-testid="link-form-guests"' not in plain
    assert f'<a href="/r/contact/{w.ann["id"]}">' in plain


def test_an_htmx_post_answers_with_the_record_page_and_a_toast(w, seller):
    board = new_list(w, "Swapped")
    response = seller.post(urls(board["id"])[0], {"ids": str(w.bob["id"])}, htmx=True)
    assert response.status_code == 200
    page = text(response)
    assert 'id="record-page"' in page
    assert 'data-xrm-toast data-level="success"' in page
    assert "Added to Guests: 1." in page
    # the page carries the new version, so that an inline edit after it does not conflict
    version = w.store.records("guest_list").get(board["id"])["version"]
    assert f"version={version}" in page


def test_the_link_change_tells_processes_which_field_changed(w):
    """The records service's update names no many-to-many field in its event; a link
    change adds the field's ids before and after, as for a column."""
    board = new_list(w, "Watched")
    service = w.store.records("guest_list", w.seller)
    seen = []
    with w.store.transaction(w.seller) as unit:
        change_links(service, board["id"], "guests", add=[w.ann["id"], w.cy["id"]])
        seen = [p for e, p in unit.events if e == "updated" and p["record_id"] == board["id"]]
    assert seen[-1]["changes"]["guests"] == [[], sorted([w.ann["id"], w.cy["id"]])]
    with pytest.raises(ValidationFailed, match="both to be added and to be removed"):
        change_links(service, board["id"], "guests", add=[w.ann["id"]], remove=[w.ann["id"]])
    with pytest.raises(ValidationFailed, match="no many-to-many field"):
        change_links(service, board["id"], "name", add=[w.ann["id"]])


def test_a_process_watching_the_field_runs_when_a_link_changes(w, seller):
    renamed, linked = new_list(w, "Renamed"), new_list(w, "Linked")
    w.store.records("guest_list", w.seller).update(renamed["id"], {"name": "Renamed again"})
    assert seller.post(urls(linked["id"])[0], {"ids": str(w.ann["id"])}).status_code == 303
    Worker(w.store).run_once()
    lists = w.store.records("guest_list")
    assert lists.get(linked["id"])["invitations_due"] is True
    assert lists.get(renamed["id"])["invitations_due"] is False  # another field changed


def as_user(w, user_id: int):
    """The guest lists as this user may see and change them (their roles applied)."""
    return w.store.records("guest_list", principal=w.store.principal(user_id))


def test_an_update_of_the_field_itself_checks_audits_and_tells_the_engine(w):
    """The edit form and the API's PATCH set the whole list through ``Records.update``:
    the same refusal of a record the user may not read, and the same audit row and event
    as a link change."""
    service = as_user(w, w.seller)
    board = new_list(w, "Through the form")
    with pytest.raises(ValidationFailed) as refused:
        service.update(board["id"], {"guests": [w.ann["id"], w.hidden["id"]]})
    assert refused.value.errors == {"guests": ["a linked record does not exist"]}
    assert guests(w, board["id"]) == []

    changed = service.update(board["id"], {"guests": [w.bob["id"], w.ann["id"]]})
    assert changed["guests"] == sorted([w.ann["id"], w.bob["id"]])
    assert [(h["old"], h["new"]) for h in guest_audit(w, board["id"])] == [
        ([], sorted([w.ann["id"], w.bob["id"]]))
    ]
    Worker(w.store).run_once()  # the process watching guests ran for this update
    assert w.store.records("guest_list").get(board["id"])["invitations_due"] is True
    # the same ids again (in another order) change nothing: no version, no audit row
    again = service.update(board["id"], {"guests": [w.ann["id"], w.bob["id"]]})
    assert again["version"] == w.store.records("guest_list").get(board["id"])["version"]
    assert len(guest_audit(w, board["id"])) == 1


def test_a_record_linked_by_someone_else_may_stay_when_another_is_added(w):
    """Only the ids added are checked: a guest the administrator linked, which the seller
    may not read, does not stop the seller adding one of their own."""
    board = new_list(w, "Shared")
    as_user(w, w.admin).update(board["id"], {"guests": [w.hidden["id"]]})
    service = as_user(w, w.seller)
    service.update(board["id"], {"guests": [w.hidden["id"], w.cy["id"]]})
    assert guests(w, board["id"]) == sorted([w.hidden["id"], w.cy["id"]])


# ------------------------------------------------------------------------ paging
ROW = re.compile(r'data-testid="related-row-(\d+)"')


def related_page(client, url: str) -> tuple[list[int], str, str | None, str | None]:
    """The ids a related list's page shows, its range text, and its Previous and Next URLs."""
    response = client.get(url)
    assert response.status_code == 200, text(response)[:500]
    page = text(response)
    shown = [int(i) for i in ROW.findall(page)]
    found = re.search(r'data-testid="related-range">([^<]*)<', page)

    def button(name):
        hit = re.search(rf'hx-get="([^"]+)"[^>]*data-testid="related-{name}"', page)
        return html.unescape(hit.group(1)) if hit else None

    return shown, found.group(1) if found else "", button("previous"), button("next")


def test_a_long_many_to_many_list_pages_and_counts_what_the_reader_may_read(w, seller, admin):
    contacts = w.store.records("contact", w.seller)
    many = [
        contacts.create({"first_name": f"Guest{n:02d}", "last_name": "Paged", "owner": w.seller})[
            "id"
        ]
        for n in range(23)
    ]
    board = new_list(w, "Gala")
    # the administrator adds their own contact too, which the seller may not read
    admins = w.store.records("guest_list", w.admin)
    admins.update(board["id"], {"guests": [*many, w.hidden["id"]]})
    first = f"/r/guest_list/{board['id']}/related/guests?links=1"

    shown, words, previous, following = related_page(seller, first)
    assert len(shown) == 10 and previous is None and following
    assert words == "1–10 of 23"  # the hidden guest is neither shown nor counted
    assert "links=1" in following  # the next page keeps the link controls

    second, words, previous, following = related_page(seller, following)
    assert words == "11–20 of 23" and previous and following
    third, words, back, last = related_page(seller, following)
    assert words == "21–23 of 23" and last is None
    assert sorted(shown + second + third) == sorted(many)
    assert w.hidden["id"] not in shown + second + third
    assert related_page(seller, back)[0] == second  # Previous goes back a page
    assert related_page(seller, previous)[0] == shown  # ... to the first one too

    assert related_page(admin, first)[1] == "1–10 of 24"  # the administrator reads all


def test_a_short_list_shows_its_count_without_pages(w, seller):
    board = new_list(w, "Small")
    w.store.records("guest_list", w.seller).update(
        board["id"], {"guests": [w.ann["id"], w.bob["id"]]}
    )
    shown, words, previous, following = related_page(
        seller, f"/r/guest_list/{board['id']}/related/guests"
    )
    assert sorted(shown) == sorted([w.ann["id"], w.bob["id"]])
    assert (words, previous, following) == ("2 records", None, None)

"""Record forms through the test client: validation errors in place with the input kept,
stale saves shown as conflicts, live visible_if/required_if, the stage bar, widgets
(money, datetime in the user's zone, rich text sanitized, files with limits, tags,
lookups), related lists, the timeline and notes."""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from browser.support import SELLER, Client, make_app, world


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("ui-forms")) as built:
        yield built


@pytest.fixture(scope="module")
def app(w):
    return make_app(w.store, MAX_CONTENT_LENGTH=256 * 1024)


def text(response) -> str:
    return response.get_data(as_text=True)


def errors(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-testid="error-(\w+)">([^<]*)<', page))


def fields(*names: str) -> list[tuple[str, str]]:
    return [("_fields", n) for n in names]


def opportunity(w, **values):
    base = {
        "name": "Deal",
        "account": w.acme["id"],
        "close_date": dt.date.today() + dt.timedelta(days=30),
        "owner": w.seller,
    }
    base.update(values)
    return w.store.records("opportunity", w.seller).create(base)


# ------------------------------------------------------------------------ create and errors
def test_create_shows_errors_next_to_fields_and_keeps_the_input(w, seller):
    form = fields("name", "account", "close_date", "amount") + [
        ("name", ""),
        ("account", str(w.acme["id"])),
        ("close_date", ""),
        ("amount", "twelve"),
    ]
    response = seller.post("/r/opportunity/new", form, htmx=True)
    assert response.status_code == 422
    page = text(response)
    assert errors(page) == {
        "name": "required",
        "close_date": "required",
        "amount": "expected a number",
    }
    assert 'value="twelve"' in page  # what was typed stays
    assert (
        f'<option value="{w.acme["id"]}" selected>Acme Corporation</option>' in page
    )  # the lookup keeps its pick
    assert 'data-testid="form-errors"' in page

    fixed = fields("name", "account", "close_date", "amount") + [
        ("name", "Fixed deal"),
        ("account", str(w.acme["id"])),
        ("close_date", "2027-02-01"),
        ("amount", "1 234.5"),  # the seller writes English: spaces group, a dot decimals
    ]
    response = seller.post("/r/opportunity/new", fixed, htmx=True)
    assert response.status_code == 204
    target = response.headers["HX-Redirect"]
    ident = int(target.rsplit("/", 1)[1])
    saved = w.store.records("opportunity").get(ident)
    assert (
        saved["name"] == "Fixed deal"
        and saved["amount"] == Decimal("1234.50")
        and saved["owner"] == w.seller
    )


def test_without_htmx_a_failed_save_is_a_full_page_and_success_redirects(w, seller):
    response = seller.post("/r/account/new", fields("name") + [("name", "")])
    assert response.status_code == 422 and "<!doctype html>" in text(response)
    response = seller.post(
        "/r/account/new",
        fields("name", "industry")
        + [("name", "Plain Co"), ("industry", "retail"), ("_close", "1")],
    )
    assert response.status_code == 303
    assert response.location.startswith("/views/all_accounts")


def test_a_field_the_form_does_not_offer_cannot_be_set(w, seller):
    response = seller.post(
        "/r/account/new",
        fields("name", "won_revenue") + [("name", "Sneaky"), ("won_revenue", "1000000")],
    )
    assert response.status_code == 303
    ident = int(response.location.rsplit("/", 1)[1])
    assert w.store.records("account").get(ident)["won_revenue"] in (None, Decimal("0"))


def test_new_form_prefills_from_the_query(w, seller):
    page = text(seller.get(f"/r/contact/new?account={w.acme['id']}"))
    assert f'<option value="{w.acme["id"]}" selected>Acme Corporation</option>' in page


# ------------------------------------------------------------------------ conflicts
def test_a_stale_form_shows_the_conflict_and_keeps_the_input(w, seller):
    deal = opportunity(w, name="Stale")
    w.store.records("opportunity", w.admin).update(deal["id"], {"next_step": "Changed meanwhile"})
    form = fields("name", "next_step") + [
        ("_version", str(deal["version"])),
        ("name", "Mine"),
        ("next_step", "My step"),
    ]
    response = seller.post(f"/r/opportunity/{deal['id']}", form, htmx=True)
    assert response.status_code == 409
    page = text(response)
    assert 'data-testid="conflict"' in page
    assert "Changed meanwhile" in page and "My step" in page
    assert 'value="Mine"' in page
    current = w.store.records("opportunity").get(deal["id"])
    assert current["name"] == "Stale"
    # the re-rendered form carries the current version: saving again overwrites
    version = re.search(r'name="_version" value="(\d+)"', page).group(1)
    assert int(version) == current["version"]
    again = fields("name", "next_step") + [
        ("_version", version),
        ("name", "Mine"),
        ("next_step", "My step"),
    ]
    assert seller.post(f"/r/opportunity/{deal['id']}", again).status_code == 303
    assert w.store.records("opportunity").get(deal["id"])["next_step"] == "My step"


# ------------------------------------------------------------------------ live rules
def test_visible_and_required_conditions_are_evaluated_on_the_server(w, seller):
    deal = opportunity(w, name="Rules")
    page = text(seller.get(f"/r/opportunity/{deal['id']}/edit"))
    assert re.search(r'class="mb-3 xrm-field d-none" id="field-lost_reason"', page)
    response = seller.post(
        f"/r/opportunity/form-state?record_id={deal['id']}",
        fields("stage") + [("stage", "lost")],
        htmx=True,
    )
    assert response.status_code == 200
    state = text(response)
    assert (
        'id="field-lost_reason" data-field="lost_reason" data-conditional hx-swap-oob="true"'
        in state
    )
    assert 'data-testid="required-lost_reason"' in state
    assert (
        'id="field-competitor"' in state and 'xrm-field d-none" id="field-competitor"' not in state
    )
    response = seller.post(
        f"/r/opportunity/form-state?record_id={deal['id']}",
        fields("stage") + [("stage", "proposal")],
        htmx=True,
    )
    assert 'xrm-field d-none" id="field-lost_reason"' in text(response)


def test_required_if_is_enforced_when_saving(w, seller):
    """call_main: result is required once the call is done (a rule of the form)."""
    call = w.store.records("call", w.seller).create({"subject": "Ring"})
    form = fields("subject", "status", "result") + [
        ("_version", str(call["version"])),
        ("subject", "Ring"),
        ("status", "done"),
        ("result", ""),
    ]
    response = seller.post(f"/r/call/{call['id']}", form)
    assert response.status_code == 422
    assert errors(text(response)) == {"result": "required"}
    form[-1] = ("result", "They will buy")
    assert seller.post(f"/r/call/{call['id']}", form).status_code == 303


def test_section_conditions_come_back_with_the_live_rules(w, seller):
    lead = w.store.records("lead", w.seller).create(
        {"last_name": "Lee", "company": "Lee Ltd", "email": "lee@leeltd.com"}
    )
    page = text(seller.get(f"/r/lead/{lead['id']}/edit"))
    assert re.search(r'xrm-section d-none" id="s-1-1"', page)  # "Conversion" shows once qualified
    state = text(
        seller.post(
            f"/r/lead/form-state?record_id={lead['id']}",
            fields("status") + [("status", "qualified")],
            htmx=True,
        )
    )
    assert 'id="s-1-1" data-conditional hx-swap-oob="true"' in state


# ------------------------------------------------------------------------ stage bar
def test_stage_bar_moves_through_allowed_stages_and_shows_what_is_missing(w, seller):
    deal = opportunity(w, name="Staged")
    page = text(seller.get(f"/r/opportunity/{deal['id']}"))
    assert 'data-testid="stage-bar"' in page
    assert re.search(
        r'data-testid="stage-qualification"\s+title="Move to Qualification · Requires: Contact"',
        page,
    )
    assert re.search(r'disabled data-testid="stage-won"', page)  # not a next stage of prospecting
    response = seller.post(
        f"/r/opportunity/{deal['id']}/stage",
        {"stage": "qualification", "_version": str(deal["version"])},
        htmx=True,
    )
    assert response.status_code == 422
    assert errors(text(response)) == {"contact": "required for stage Qualification"}
    updated = w.store.records("opportunity", w.seller).update(deal["id"], {"contact": w.jane["id"]})
    response = seller.post(
        f"/r/opportunity/{deal['id']}/stage",
        {"stage": "qualification", "_version": str(updated["version"])},
        htmx=True,
    )
    assert response.status_code == 204
    current = w.store.records("opportunity").get(deal["id"])
    assert current["stage"] == "qualification"


# ------------------------------------------------------------------------ widgets
def test_rich_text_is_sanitized_on_the_server(w, seller):
    form = fields("subject", "body") + [
        ("subject", "Tricky"),
        ("body", '<p onclick="x()">Hi<script>alert(1)</script> <b>there</b></p>'),
    ]
    response = seller.post("/r/email_message/new", form)
    assert response.status_code == 303
    ident = int(response.location.rsplit("/", 1)[1])
    body = w.store.records("email_message").get(ident)["body"]
    assert "script" not in body and "onclick" not in body and "<b>there</b>" in body
    assert "<script>" not in text(seller.get(f"/r/email_message/{ident}"))


def test_datetime_is_read_in_the_users_time_zone(w, seller):
    response = seller.post(
        "/r/task/new",
        fields("subject", "due") + [("subject", "Local time"), ("due", "2027-03-10T09:15")],
    )
    ident = int(response.location.rsplit("/", 1)[1])
    due = w.store.records("task").get(ident)["due"]
    assert due == dt.datetime(2027, 3, 10, 6, 15, tzinfo=dt.UTC)  # Moscow is UTC+3


def test_tags_multi_choice_many_to_many_rating_and_boolean(w, seller):
    form = fields("last_name", "tags", "do_not_call") + [
        ("last_name", "Tagged"),
        ("tags", "VIP, golf,vip"),
        ("do_not_call", "true"),
    ]
    response = seller.post("/r/contact/new", form)
    ident = int(response.location.rsplit("/", 1)[1])
    contact = w.store.records("contact").get(ident)
    assert contact["tags"] == ["golf", "vip"] and contact["do_not_call"] is True
    # an unchecked box posts nothing: the field becomes false
    form = fields("last_name", "do_not_call") + [
        ("_version", str(contact["version"])),
        ("last_name", "Tagged"),
    ]
    seller.post(f"/r/contact/{ident}", form)
    assert w.store.records("contact").get(ident)["do_not_call"] is False
    meeting = fields("subject", "starts_at", "attendees") + [
        ("subject", "Sync"),
        ("starts_at", "2027-01-01T10:00"),
        ("attendees", str(w.jane["id"])),
        ("attendees", str(ident)),
    ]
    response = seller.post("/r/meeting/new", meeting)
    assert response.status_code == 303, text(response)[:2000]
    mid = int(response.location.rsplit("/", 1)[1])
    assert sorted(w.store.records("meeting").get(mid)["attendees"]) == sorted([w.jane["id"], ident])
    page = text(seller.get(f"/r/meeting/{mid}/edit"))
    assert "Jane Doe" in page and "multiple data-xrm-lookup" in page
    account = fields("name", "rating") + [("name", "Rated"), ("rating", "4")]
    response = seller.post("/r/account/new", account)
    aid = int(response.location.rsplit("/", 1)[1])
    assert w.store.records("account").get(aid)["rating"] == 4


def test_file_upload_with_type_and_size_limits(w, seller, admin):
    # email_message.attachment: up to 25 MB, but never more than a request may carry (256 KB here)
    ok = {
        "_fields": ["subject", "attachment"],
        "subject": "With file",
        "attachment": (io.BytesIO(b"%PDF-1.4 data"), "offer.pdf", "application/pdf"),
    }
    response = seller.post("/r/email_message/new", ok, content_type="multipart/form-data")
    assert response.status_code == 303
    ident = int(response.location.rsplit("/", 1)[1])
    stored = w.store.records("email_message").get(ident)["attachment"]
    assert stored["name"] == "offer.pdf" and stored["size"] == 13
    assert seller.get(f"/files/{stored['key']}").data == b"%PDF-1.4 data"
    too_big = {
        "_fields": ["subject", "attachment"],
        "subject": "Too big",
        "attachment": (io.BytesIO(b"x" * 300_000), "big.bin"),
    }
    response = seller.post("/r/email_message/new", too_big, content_type="multipart/form-data")
    assert response.status_code == 413
    # a field that accepts only some types
    admin_client = admin
    plan = admin_client.post(
        "/admin/entities/account/fields",
        {"name": "logo", "type": "file", "label_en": "Logo", "placement": "0:0:0"},
    )
    assert plan.status_code == 200
    documents = re.search(r'name="documents" value="([^"]*)"', text(plan)).group(1)
    import html
    import json

    docs = json.loads(html.unescape(documents))
    docs[0][1]["fields"]["logo"]["accept"] = [".png", ".jpg"]
    docs[0][1]["fields"]["logo"]["max_size_mb"] = 0.01
    assert (
        admin_client.post(
            "/admin/apply", {"documents": json.dumps(docs), "back": "/admin/"}
        ).status_code
        == 303
    )
    wrong = {
        "_fields": ["name", "logo"],
        "name": "Logo Co",
        "logo": (io.BytesIO(b"GIF89a"), "logo.gif"),
    }
    response = seller.post("/r/account/new", wrong, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "not accepted" in errors(text(response))["logo"]
    large = {
        "_fields": ["name", "logo"],
        "name": "Logo Co",
        "logo": (io.BytesIO(b"x" * 20_000), "logo.png"),
    }
    response = seller.post("/r/account/new", large, content_type="multipart/form-data")
    assert "larger than" in errors(text(response))["logo"]
    # a valid upload survives a failed save: it is kept, not uploaded again
    kept = {"_fields": ["name", "logo"], "name": "", "logo": (io.BytesIO(b"PNG"), "logo.png")}
    response = seller.post("/r/account/new", kept, content_type="multipart/form-data")
    assert response.status_code == 422
    page = text(response)
    kept_value = html.unescape(re.search(r'name="logo__kept" value="([^"]*)"', page).group(1))
    response = seller.post(
        "/r/account/new", {"_fields": ["name", "logo"], "name": "Logo Co", "logo__kept": kept_value}
    )
    ident = int(response.location.rsplit("/", 1)[1])
    assert w.store.records("account").get(ident)["logo"]["name"] == "logo.png"


# ------------------------------------------------------------------------ related, timeline, notes
def test_related_lists_and_new_related_record(w, seller):
    page = text(seller.get(f"/r/account/{w.acme['id']}/related/contacts"))
    assert "Jane Doe" in page
    assert f"/r/contact/new?account={w.acme['id']}" in page
    page = text(seller.get(f"/r/account/{w.acme['id']}/related/opportunities"))
    assert "Acme renewal" in page


def test_timeline_reads_who_changed_what_and_when(w, seller):
    deal = opportunity(w, name="Audited", amount=Decimal("10"))
    w.store.records("opportunity", w.seller).update(
        deal["id"], {"amount": Decimal("20"), "next_step": "Demo"}
    )
    page = text(seller.get(f"/r/opportunity/{deal['id']}/timeline"))
    assert "Sam Seller created the record" in page
    assert re.search(r"Amount</span>: <span[^>]*>\$10\.00</span> → \$20\.00", page)
    assert re.search(r"Next step</span>: <span[^>]*>—</span> → Demo", page)


def test_notes_with_attachments_appear_in_the_timeline(w, seller):
    data = {
        "body": "Called, they are keen.\nSend the offer.",
        "attachment": (io.BytesIO(b"notes"), "call.txt"),
    }
    response = seller.post(
        f"/r/account/{w.globex['id']}/notes", data, content_type="multipart/form-data", htmx=True
    )
    assert response.status_code == 200
    page = text(response)
    assert "<p>Called, they are keen.</p><p>Send the offer.</p>" in page
    assert "call.txt" in page
    notes = (
        w.store.records("note")
        .query(filter=["regarding", "eq", {"entity": "account", "id": w.globex["id"]}])
        .rows
    )
    assert len(notes) == 1 and notes[0]["attachment"]["name"] == "call.txt"
    response = seller.post(f"/r/account/{w.globex['id']}/notes", {"body": ""}, htmx=True)
    assert response.status_code == 422  # a note needs text


def test_activities_regarding_a_record_are_on_its_timeline(w, seller):
    w.store.records("task", w.seller).create(
        {"subject": "Send contract", "regarding": {"entity": "account", "id": w.acme["id"]}}
    )
    page = text(seller.get(f"/r/account/{w.acme['id']}/timeline"))
    assert "Send contract" in page and 'data-testid="timeline-activity"' in page


def test_delete_from_the_form(w, seller):
    deal = opportunity(w, name="Doomed")
    response = seller.post(
        f"/r/opportunity/{deal['id']}/delete", {"_version": str(deal["version"])}
    )
    assert response.status_code == 303
    assert seller.get(f"/r/opportunity/{deal['id']}").status_code == 404


def test_hidden_fields_are_not_shown(w, tmp_path):
    """A role that hides a field: the form leaves it out and a post cannot set it."""
    store = w.store
    store.customize(
        "roles",
        {
            "roles": {
                "intern": {
                    "label": "Intern",
                    "permissions": {"*": {"read": "all", "create": "all", "update": "own"}},
                    "fields": {"account": {"annual_revenue": "hidden", "tax_id": "read_only"}},
                }
            }
        },
    )
    intern = store.add_user(
        "intern@example.com", "Ivan Intern", password="correct horse battery", roles=["intern"]
    )
    client = Client(make_app(store)).login("intern@example.com")
    mine = store.records("account", intern).create({"name": "Intern's", "owner": intern})
    page = text(client.get(f"/r/account/{mine['id']}/edit"))
    assert 'data-testid="field-annual_revenue"' not in page
    assert re.search(
        r'data-testid="field-tax_id">\s*<label[^>]*>[^<]*</label>\s*<div class="form-control-plaintext',
        page,
    )
    response = client.post(
        f"/r/account/{mine['id']}",
        fields("name", "annual_revenue", "tax_id")
        + [("_version", "1"), ("name", "Renamed"), ("annual_revenue", "5"), ("tax_id", "123")],
    )
    assert response.status_code == 303
    saved = store.records("account").get(mine["id"])
    assert (
        saved["name"] == "Renamed" and saved["annual_revenue"] is None and saved["tax_id"] is None
    )


def test_messages_next_to_fields_are_in_the_users_language(w, app):
    reader_like = Client(app).login(SELLER)
    reader_like.post("/preferences", {"locale": "ru"})
    try:
        form = fields("name", "account", "close_date", "amount") + [
            ("name", ""),
            ("account", str(w.acme["id"])),
            ("close_date", "2027-01-01"),
            ("amount", "много"),
        ]
        page = text(reader_like.post("/r/opportunity/new", form))
        assert errors(page) == {"name": "обязательное поле", "amount": "ожидается число"}
        assert "Исправьте отмеченные поля." in page
    finally:
        reader_like.post("/preferences", {"locale": "en"})

"""The read view of a record and its inline edit, through the real WSGI application:
values formatted for the reader (English and Russian, the reader's zone), fields hidden by
``visible_if`` or by field security left out, related lists and the timeline, one field
saved in place through the records service, refusals (read-only field, no permission,
missing CSRF token) that change nothing, and a stale version shown as a conflict."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from browser.support import PASSWORD, Client, world
from conftest import one_record_of_each


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("record-view")) as built:
        # a role that may not see the amount of a deal nor change an account's phone
        built.store.customize(
            "roles",
            {
                "roles": {
                    "clerk": {
                        "label": {"en": "Clerk"},
                        "permissions": {"*": {"create": "all", "read": "all", "update": "all"}},
                        "fields": {
                            "opportunity": {"amount": "hidden"},
                            "account": {"phone": "read_only"},
                        },
                    }
                }
            },
        )
        built.clerk = built.store.add_user(
            "clerk@example.com", "Carl Clerk", password=PASSWORD, roles=["clerk"]
        )
        yield built


@pytest.fixture
def clerk(app):
    return Client(app).login("clerk@example.com")


def text(response) -> str:
    return response.get_data(as_text=True)


def block(page: str, testid: str) -> str:
    """The element with this data-testid, up to the next field or highlight."""
    start = page.index(f'data-testid="{testid}"')
    end = re.compile(r'data-testid="(field|highlight)-').search(page, start + 1)
    return page[start : end.start() if end else len(page)]


def deal(w, **values):
    base = {
        "name": "Read view deal",
        "account": w.acme["id"],
        "amount": Decimal("1234.5"),
        "close_date": dt.date(2027, 3, 9),
        "owner": w.seller,
        "next_step": "Call back",
    }
    base.update(values)
    return w.store.records("opportunity", w.seller).create(base)


def stored(w, entity, ident):
    return w.store.records(entity).get(ident)


# ------------------------------------------------------------------------ reading
def test_the_record_opens_as_a_read_view_with_formatted_values(w, seller):
    record = deal(w, description="<p>Big <strong>one</strong></p><script>alert(1)</script>")
    response = seller.get(f"/r/opportunity/{record['id']}")
    assert response.status_code == 200
    page = text(response)
    assert 'data-testid="record-view"' in page and 'data-testid="record-form"' not in page
    assert 'name="amount"' not in page  # values to read, not inputs
    # highlights: the first fields of the first section, across its columns, title left out
    assert re.findall(r'data-testid="highlight-(\w+)"', page) == [
        "amount",
        "account",
        "close_date",
        "contact",
    ]
    assert "$1,234.50" in block(page, "highlight-amount")
    assert f'<a href="/r/account/{w.acme["id"]}">Acme Corporation</a>' in block(
        page, "field-account"
    )
    assert "Mar 9, 2027" in block(page, "field-close_date")
    assert "Prospecting</span>" in block(page, "field-stage")  # an option by its label
    # rich text sanitized: the markup kept, the script gone
    description = block(page, "field-description")
    assert "<strong>one</strong>" in description and "<script>" not in description
    assert 'data-testid="stage-bar"' in page and 'data-testid="timeline"' in page
    assert f'href="/r/opportunity/{record["id"]}/edit" data-testid="edit"' in page


def test_emails_phones_and_urls_are_links(w, seller):
    account = w.store.records("account", w.seller).create(
        {
            "name": "Links Ltd",
            "email": "info@links.example",
            "phone": "+1 202 555 0143",
            "website": "https://links.example/",
            "owner": w.seller,
        }
    )
    page = text(seller.get(f"/r/account/{account['id']}"))
    assert 'href="mailto:info@links.example"' in block(page, "field-email")
    assert 'href="tel:+12025550143"' in block(page, "field-phone")
    assert 'href="https://links.example/"' in block(page, "field-website")


def test_values_in_russian_and_in_the_readers_zone(w, reader, seller):
    record = deal(w)
    page = text(reader.get(f"/r/opportunity/{record['id']}"))  # Rita reads in Russian
    assert "Сумма" in block(page, "highlight-amount")
    assert re.search(r"1\s234,50\s\$", block(page, "highlight-amount"))
    assert "9 мар. 2027" in block(page, "field-close_date")
    assert "Поиск</span>" in block(page, "field-stage")
    task = w.store.records("task", w.seller).create(
        {"subject": "Zone check", "due": "2027-01-15T07:30:00Z"}
    )
    shown = block(text(seller.get(f"/r/task/{task['id']}")), "field-due")
    assert "10:30" in shown  # the seller is in Europe/Moscow (UTC+3)


def test_fields_hidden_by_visible_if_or_by_field_security_are_absent(w, seller, clerk):
    open_deal = deal(w)
    page = text(seller.get(f"/r/opportunity/{open_deal['id']}"))
    assert 'data-testid="field-lost_reason"' not in page  # visible_if: [stage, eq, lost]
    assert 'data-testid="field-competitor"' not in page
    lost = deal(w, stage="lost", lost_reason="price")
    assert 'data-testid="field-lost_reason"' in text(seller.get(f"/r/opportunity/{lost['id']}"))
    # the clerk may not read amounts: neither the field nor its highlight, nor what derives
    # from it
    page = text(clerk.get(f"/r/opportunity/{open_deal['id']}"))
    assert 'data-testid="field-amount"' not in page
    assert 'data-testid="highlight-amount"' not in page
    assert "1,234.50" not in page


def test_every_entity_opens_in_its_read_view(w, admin):
    """A record of every entity (made through the records service) opens as a read view,
    files as download links and long text as written."""
    from xrm.storage.files import put_file

    store = w.store
    attachment = put_file(store, b"hello", "hello.txt", "text/plain", w.admin)
    made = {
        "task": {"subject": "Call back", "description": "First line\nSecond line"},
        "call": {"subject": "Intro call"},
        "meeting": {"subject": "Kick-off", "starts_at": "2027-03-01T10:00:00Z"},
        "email_message": {"subject": "Hello", "attachment": attachment},
        "note": {"body": "<p>Remember</p>", "regarding": {"entity": "account", "id": w.acme["id"]}},
        "contact_list": {"name": "Board", "members": [w.jane["id"]]},
        "lead": {"last_name": "Smith", "company": "Smith & Co"},
        "product": {"code": "P-RV", "name": "Widget", "list_price": "10"},
        "price_list": {"name": "Read view list"},
        "sales_target": {"name": "March", "period": "2027-03-01", "amount": "50000"},
    }
    ids = {"account": w.acme["id"], "contact": w.jane["id"], "opportunity": w.deal["id"]}
    for name, values in made.items():
        ids[name] = store.records(name, w.admin).create(values)["id"]
    ids["price_list_item"] = store.records("price_list_item", w.admin).create(
        {"price_list": ids["price_list"], "product": ids["product"], "price": "9.5"}
    )["id"]
    ids["opportunity_line"] = store.records("opportunity_line", w.admin).create(
        {"opportunity": w.deal["id"], "product": ids["product"], "quantity": 2, "unit_price": "10"}
    )["id"]
    ids = one_record_of_each(store, w.admin, ids)
    for name in store.refresh().entities:
        response = admin.get(f"/r/{name}/{ids[name]}")
        assert response.status_code == 200, (name, text(response)[:500])
        assert 'data-testid="record-view"' in text(response), name
    email = text(admin.get(f"/r/email_message/{ids['email_message']}"))
    assert f'href="/files/{attachment["key"]}"' in block(email, "field-attachment")
    task = text(admin.get(f"/r/task/{ids['task']}"))
    assert "First line\nSecond line" in block(task, "field-description")


def test_related_lists_and_their_links_open_read_views(w, seller):
    page = text(seller.get(f"/r/account/{w.acme['id']}"))
    url = f"/r/account/{w.acme['id']}/related/contacts"
    assert f'hx-get="{url}"' in page
    related = text(seller.get(url))
    assert f'<a href="/r/contact/{w.jane["id"]}">' in related
    # the contact's own page is its read view, with the account as a link back
    contact = text(seller.get(f"/r/contact/{w.jane['id']}"))
    assert 'data-testid="record-view"' in contact
    assert f'<a href="/r/account/{w.acme["id"]}">Acme Corporation</a>' in contact


# ------------------------------------------------------------------------ inline edit
def test_a_pencil_opens_the_fields_widget(w, seller):
    record = deal(w)
    page = text(seller.get(f"/r/opportunity/{record['id']}"))
    pencil = block(page, "field-next_step")
    assert 'data-testid="pencil-next_step"' in pencil
    version = record["version"]
    url = f"/r/opportunity/{record['id']}/field/next_step?edit=1&version={version}"
    assert f'hx-get="{url.replace("&", "&amp;")}"' in pencil
    widget = text(seller.get(url))
    assert 'name="next_step" value="Call back"' in widget
    assert f'name="_version" value="{version}"' in widget
    assert 'name="csrf_token"' in widget
    # without scripts, the pencil's link opens the same input on the page
    page = text(seller.get(f"/r/opportunity/{record['id']}?edit=next_step"))
    assert 'data-testid="inline-form-next_step"' in page
    # Cancel brings the value back
    value = text(seller.get(f"/r/opportunity/{record['id']}/field/next_step"))
    assert "Call back" in value and "<input" not in value.replace('type="hidden"', "")


def test_inline_edit_saves_one_field(w, seller):
    record = deal(w)
    url = f"/r/opportunity/{record['id']}/field/next_step"
    response = seller.post(
        url,
        {"_version": record["version"], "_fields": "next_step", "next_step": "Send the quote"},
        htmx=True,
    )
    assert response.status_code == 200
    page = text(response)
    assert "Send the quote" in block(page, "field-next_step")
    assert 'class="xrm-read-field xrm-saved" id="field-next_step"' in page
    after = stored(w, "opportunity", record["id"])
    assert after["next_step"] == "Send the quote"
    assert after["version"] == record["version"] + 1
    assert after["amount"] == record["amount"] and after["name"] == record["name"]
    # the page now carries the new version, so the next inline save is not stale
    assert f"version={after['version']}" in page
    # without htmx: back to the read view
    response = seller.post(
        url, {"_version": after["version"], "_fields": "next_step", "next_step": "Sign"}
    )
    assert response.status_code == 303
    assert response.location.endswith(f"/r/opportunity/{record['id']}")
    assert stored(w, "opportunity", record["id"])["next_step"] == "Sign"


def test_the_tab_of_the_saved_field_stays_open(w, seller):
    record = deal(w)
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/description",
        {"_version": record["version"], "_fields": "description", "description": "<p>Hi</p>"},
        htmx=True,
    )
    assert response.status_code == 200
    active = re.findall(r'class="nav-link active"[^>]*>([^<]*)<', text(response))
    assert active == ["Details"]
    assert stored(w, "opportunity", record["id"])["description"] == "<p>Hi</p>"


def test_only_the_posted_field_is_written(w, seller):
    record = deal(w)
    seller.post(
        f"/r/opportunity/{record['id']}/field/next_step",
        [
            ("_version", str(record["version"])),
            ("_fields", "next_step"),
            ("_fields", "name"),
            ("next_step", "Only me"),
            ("name", "Sneaked in"),
        ],
        htmx=True,
    )
    after = stored(w, "opportunity", record["id"])
    assert after["next_step"] == "Only me" and after["name"] == record["name"]


def test_an_invalid_value_stays_in_its_input_with_the_message(w, seller, reader):
    record = deal(w)
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/amount",
        {"_version": record["version"], "_fields": "amount", "amount": "twelve"},
        htmx=True,
    )
    assert response.status_code == 422
    field = block(text(response), "field-amount")
    assert 'value="twelve"' in field
    assert 'data-testid="error-amount">expected a number<' in field
    assert stored(w, "opportunity", record["id"])["version"] == record["version"]
    # a required field emptied
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/name",
        {"_version": record["version"], "_fields": "name", "name": ""},
        htmx=True,
    )
    assert response.status_code == 422
    assert 'data-testid="error-name">required<' in text(response)
    assert stored(w, "opportunity", record["id"])["name"] == record["name"]


def test_a_rule_on_another_field_is_shown_under_the_edited_one(w, seller):
    record = deal(w, amount=None)
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/stage",
        {"_version": record["version"], "_fields": "stage", "stage": "lost"},
        htmx=True,
    )
    assert response.status_code == 422
    field = block(text(response), "field-stage")
    assert "Lost reason" in field  # the stage's requirement names the field
    assert stored(w, "opportunity", record["id"])["stage"] == "prospecting"


def test_a_status_that_needs_another_field_is_refused_inline(w, seller):
    lead = w.store.records("lead", w.seller).create(
        {"last_name": "Inline", "company": "Inline Ltd", "owner": w.seller}
    )
    response = seller.post(
        f"/r/lead/{lead['id']}/field/status",
        {"_version": lead["version"], "_fields": "status", "status": "disqualified"},
        htmx=True,
    )
    assert response.status_code == 422
    assert "Disqualification reason" in block(text(response), "field-status")
    assert stored(w, "lead", lead["id"])["status"] == lead["status"]


def test_read_only_fields_have_no_pencil_and_are_refused(w, seller, clerk):
    record = deal(w)
    page = text(seller.get(f"/r/opportunity/{record['id']}"))
    # computed and read-only fields
    for name in ("expected_revenue", "closed_on"):
        if f'data-testid="field-{name}"' in page:
            assert f'data-testid="pencil-{name}"' not in block(page, f"field-{name}")
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/closed_on",
        {"_version": record["version"], "_fields": "closed_on", "closed_on": "2027-01-01"},
        htmx=True,
    )
    assert response.status_code == 403
    assert (
        seller.get(f"/r/opportunity/{record['id']}/field/expected_revenue?edit=1").status_code
        == 403
    )
    # read-only for a role: the clerk sees the phone but may not change it
    account = w.store.records("account", w.seller).create(
        {"name": "Phone Co", "phone": "+1 202 555 0100", "owner": w.seller}
    )
    page = text(clerk.get(f"/r/account/{account['id']}"))
    assert 'data-testid="field-phone"' in page
    assert 'data-testid="pencil-phone"' not in block(page, "field-phone")
    assert 'data-testid="pencil-name"' in block(page, "field-name")
    response = clerk.post(
        f"/r/account/{account['id']}/field/phone",
        {"_version": account["version"], "_fields": "phone", "phone": "+1 202 555 0199"},
        htmx=True,
    )
    assert response.status_code == 403
    assert stored(w, "account", account["id"])["phone"] == "+12025550100"
    # a field the user may not read is not there to edit
    response = clerk.post(
        f"/r/opportunity/{record['id']}/field/amount",
        {"_version": record["version"], "_fields": "amount", "amount": "1"},
        htmx=True,
    )
    assert response.status_code == 404
    assert stored(w, "opportunity", record["id"])["amount"] == record["amount"]


def test_a_field_hidden_by_visible_if_cannot_be_edited(w, seller):
    record = deal(w)
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/competitor",
        {"_version": record["version"], "_fields": "competitor", "competitor": w.globex["id"]},
        htmx=True,
    )
    assert response.status_code == 404
    assert stored(w, "opportunity", record["id"])["competitor"] is None


def test_users_who_may_not_update_get_no_pencil_and_are_refused(w, reader, seller, admin):
    record = deal(w)
    page = text(reader.get(f"/r/opportunity/{record['id']}"))
    assert 'data-testid="pencil-' not in page
    assert 'data-testid="edit"' not in page
    response = reader.post(
        f"/r/opportunity/{record['id']}/field/next_step",
        {"_version": record["version"], "_fields": "next_step", "next_step": "Mine"},
        htmx=True,
    )
    assert response.status_code == 403
    assert reader.get(f"/r/opportunity/{record['id']}/field/next_step?edit=1").status_code == 403
    # scope "own": the seller reads the administrator's deal in his team... or not at all;
    # either way he may not change it
    theirs = w.store.records("opportunity", w.admin).create(
        {
            "name": "Admin's deal",
            "account": w.initech["id"],
            "close_date": dt.date(2027, 5, 1),
            "owner": w.admin,
        }
    )
    response = seller.post(
        f"/r/opportunity/{theirs['id']}/field/next_step",
        {"_version": theirs["version"], "_fields": "next_step", "next_step": "Mine"},
        htmx=True,
    )
    assert response.status_code in (403, 404)
    assert stored(w, "opportunity", theirs["id"])["next_step"] is None
    assert stored(w, "opportunity", record["id"])["next_step"] == "Call back"
    # the administrator may
    assert 'data-testid="pencil-next_step"' in text(admin.get(f"/r/opportunity/{theirs['id']}"))


def test_a_stale_version_shows_the_conflict_and_keeps_the_value(w, seller):
    record = deal(w)
    w.store.records("opportunity", w.admin).update(record["id"], {"next_step": "Theirs"})
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/next_step",
        {"_version": record["version"], "_fields": "next_step", "next_step": "Mine"},
        htmx=True,
    )
    assert response.status_code == 409
    page = text(response)
    conflict = page[page.index('data-testid="conflict"') :]
    assert "Theirs" in conflict and "Mine" in conflict
    field = block(page, "field-next_step")
    assert 'value="Mine"' in field
    current = stored(w, "opportunity", record["id"])
    assert current["next_step"] == "Theirs"
    # the form now carries the current version: saving again overwrites on purpose
    assert f'name="_version" value="{current["version"]}"' in field
    assert "Save anyway" in field
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/next_step",
        {"_version": current["version"], "_fields": "next_step", "next_step": "Mine"},
        htmx=True,
    )
    assert response.status_code == 200
    assert stored(w, "opportunity", record["id"])["next_step"] == "Mine"


def test_inline_edit_needs_the_csrf_token(w, seller):
    record = deal(w)
    response = seller.post(
        f"/r/opportunity/{record['id']}/field/next_step",
        {"_version": record["version"], "_fields": "next_step", "next_step": "Forged"},
        csrf=False,
    )
    assert response.status_code == 400
    assert stored(w, "opportunity", record["id"])["next_step"] == "Call back"


def test_a_stage_move_from_the_read_view_comes_back_to_it(w, seller):
    record = deal(w)
    page = text(seller.get(f"/r/opportunity/{record['id']}"))
    bar = page[page.index('data-testid="stage-bar"') :]
    assert 'name="_stay"' not in bar[: bar.index("</nav>")]
    # refused: the form opens with what the stage needs marked
    response = seller.post(
        f"/r/opportunity/{record['id']}/stage",
        {"stage": "qualification", "_version": str(record["version"])},
        htmx=True,
    )
    assert response.status_code == 422
    assert 'data-testid="error-contact">required for stage Qualification<' in text(response)
    updated = w.store.records("opportunity", w.seller).update(
        record["id"], {"contact": w.jane["id"]}
    )
    response = seller.post(
        f"/r/opportunity/{record['id']}/stage",
        {"stage": "qualification", "_version": str(updated["version"])},
    )
    assert response.status_code == 303
    assert response.location.endswith(f"/r/opportunity/{record['id']}")
    assert stored(w, "opportunity", record["id"])["stage"] == "qualification"
    # from the edit form, the move stays in the form
    form = text(seller.get(f"/r/opportunity/{record['id']}/edit"))
    assert 'name="_stay" value="1"' in form[form.index('data-testid="stage-bar"') :]


# ------------------------------------------------------------------------ the edit form
def test_edit_opens_the_full_form_and_saving_lands_on_the_read_view(w, seller):
    record = deal(w)
    form = text(seller.get(f"/r/opportunity/{record['id']}/edit"))
    assert 'data-testid="record-form"' in form
    assert f'action="/r/opportunity/{record["id"]}"' in form
    posted = [
        ("_version", str(record["version"])),
        ("_fields", "next_step"),
        ("next_step", "From the form"),
    ]
    response = seller.post(f"/r/opportunity/{record['id']}", posted)
    assert response.status_code == 303
    assert response.location.endswith(f"/r/opportunity/{record['id']}")
    version = stored(w, "opportunity", record["id"])["version"]
    # "Save and continue editing" stays in the form
    posted = [
        ("_version", str(version)),
        ("_fields", "next_step"),
        ("next_step", "Still editing"),
        ("_stay", "1"),
    ]
    response = seller.post(f"/r/opportunity/{record['id']}", posted)
    assert response.status_code == 303
    assert response.location.endswith(f"/r/opportunity/{record['id']}/edit")
    assert stored(w, "opportunity", record["id"])["next_step"] == "Still editing"


def test_links_to_records_open_the_read_view(w, seller):
    href = f'href="/r/opportunity/{w.deal["id"]}"'
    for url in ("/views/open_opportunities", "/views/pipeline_board"):
        page = text(seller.get(url))
        assert href in page, url
        assert f"/r/opportunity/{w.deal['id']}/edit" not in page
    task = w.store.records("task", w.seller).create(
        {"subject": "About the deal", "regarding": {"entity": "opportunity", "id": w.deal["id"]}}
    )
    timeline = text(seller.get(f"/r/opportunity/{w.deal['id']}/timeline"))
    assert f'href="/r/task/{task["id"]}"' in timeline

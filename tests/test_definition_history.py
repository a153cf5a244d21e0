"""The history of definitions changed in the browser, through the real WSGI app: each
save and revert is a row (who, when, text before and after, the plan) written in the
change's transaction; the page shows each as a diff; "revert to this version" is shown as
its plan first and applied all or nothing; a revert whose version no longer fits the
catalog is refused with the reason and changes nothing; one that would clear option
values in use asks for that loss by name."""

from __future__ import annotations

import html

import pytest
import sqlalchemy as sa
from browser.support import ADMIN, SELLER, Client, make_app, world

from xrm.storage import history
from xrm.storage import tables as T

URL = "/admin/definitions/process/proposal_follow_up"


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("definition-history")) as built:
        yield built


@pytest.fixture
def admin(w):
    return Client(make_app(w.store)).login(ADMIN)


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def source(client, url: str) -> str:
    page = text(client.get(url))
    return page.split('data-testid="definition-text">')[1].split("</textarea>")[0]


def save(client, url: str, yaml_text: str) -> None:
    plan = client.post(url, {"text": yaml_text})
    assert plan.status_code == 200, text(plan)
    raw = plan.get_data(as_text=True)
    documents = html.unescape(raw.split('name="documents" value="')[1].split('"')[0])
    done = client.post(f"{url}/apply", {"documents": documents})
    assert done.status_code == 303


def rows(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(T.definition_history)
        ).scalar_one()


def test_saves_are_listed_with_diffs_and_a_revert_goes_through_its_plan(w, admin):
    pack_text = source(admin, URL)
    first = pack_text.replace(
        "process: proposal_follow_up\n", "process: proposal_follow_up\nenabled: false\n"
    )
    save(admin, URL, first)
    second = first.replace("enabled: false\n", "enabled: true\nmax_attempts: 3\n")
    save(admin, URL, second)
    entries = history.entries(w.store, "process", "proposal_follow_up")
    assert [e["note"] for e in entries[:2]] == ["saved", "saved"]
    older = entries[1]
    assert older["before_text"].strip() == pack_text.strip()  # the pack's, as shown
    assert "enabled: false" in older["after_text"] and older["user_id"] == w.admin
    assert older["document"]["enabled"] is False

    page = text(admin.get(f"{URL}/history"))
    assert page.count('data-testid="history-entry"') == len(entries)
    assert "+enabled: false" in page and "+max_attempts: 3" in page and "-enabled: false" in page
    assert "Ada Admin" in page

    before = rows(w.store)
    review = admin.post(f"{URL}/history/{older['id']}/revert", {})
    assert review.status_code == 200
    body = text(review)
    assert '<span class="text-danger">-max_attempts: 3</span>' in body
    assert 'data-testid="apply"' in body
    assert w.store.refresh().processes["proposal_follow_up"].enabled  # nothing yet
    assert rows(w.store) == before
    done = admin.post(f"{URL}/history/{older['id']}/revert", {"confirm": "1"})
    assert done.status_code == 303
    assert not w.store.refresh().processes["proposal_follow_up"].enabled
    latest = history.entries(w.store, "process", "proposal_follow_up")[0]
    assert latest["note"] == f"reverted to version #{older['id']}"
    assert latest["after_text"] == older["after_text"]

    # back to the pack's own version: taken out of the layer, and listed too
    assert admin.post(f"{URL}/revert", {"confirm": "1"}).status_code == 303
    gone = history.entries(w.store, "process", "proposal_follow_up")[0]
    assert gone["note"] == "customization taken out" and gone["document"] is None
    assert w.store.refresh().processes["proposal_follow_up"].enabled
    # reverting to a version that is the one in effect says so
    again = admin.post(f"{URL}/history/{gone['id']}/revert", {})
    assert again.status_code == 422 and "nothing to revert" in text(again)


def test_a_revert_that_no_longer_fits_is_refused_and_changes_nothing(w, admin):
    w.store.customize("extend", {"extend": "account", "fields": {"loyalty": {"type": "integer"}}})
    url = "/admin/definitions/views/loyal_accounts"
    view = (
        "views:\n  loyal_accounts:\n    entity: account\n    columns: [name]\n"
        "    filter: [{}, ge, 3]\n"
    )
    assert admin.get(f"{url}?new=1").status_code == 200
    save(admin, url, view.format("loyalty"))
    save(admin, url, view.format("employees"))
    old = history.entries(w.store, "views", "loyal_accounts")[1]
    w.store.customize("extend", {"extend": "account", "remove": ["loyalty"]})
    version = w.store.refresh().version
    refused = admin.post(f"{url}/history/{old['id']}/revert", {})
    assert refused.status_code == 422 and "loyalty" in text(refused)
    assert 'data-testid="apply"' not in text(refused)
    forced = admin.post(f"{url}/history/{old['id']}/revert", {"confirm": "1"})
    assert forced.status_code == 422
    assert w.store.refresh().version == version
    assert "employees" in str(w.store.refresh().views["loyal_accounts"].filter)


def test_a_revert_that_clears_option_values_in_use_asks_for_the_loss(w, admin):
    url = "/admin/definitions/option_sets/industry"
    typed = source(admin, url) + "    - {value: space, label: {en: Space, ru: Космос}}\n"
    save(admin, url, typed)
    account = w.store.records("account").create({"name": "Orbital", "industry": "space"})
    review = text(admin.post(f"{url}/revert", {}))
    assert 'name="allow_loss" value="account.industry"' in review
    assert "option value space no longer offered" in review
    refused = admin.post(f"{url}/revert", {"confirm": "1"})
    assert refused.status_code == 303  # back to the page with the reason
    assert "space" in w.store.refresh().option_sets["industry"].values
    assert w.store.records("account").get(account["id"])["industry"] == "space"
    done = admin.post(f"{url}/revert", {"confirm": "1", "allow_loss": "account.industry"})
    assert done.status_code == 303
    assert "space" not in w.store.refresh().option_sets["industry"].values
    assert w.store.records("account").get(account["id"])["industry"] is None


def test_only_administrators_see_history(w):
    seller = Client(make_app(w.store)).login(SELLER)
    assert seller.get(f"{URL}/history").status_code == 403
    assert seller.post(f"{URL}/history/1/revert", {"confirm": "1"}).status_code == 403

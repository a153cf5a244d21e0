"""The structured process editor, through the real WSGI app: a shipped process switched
off, a step's values changed (a delay, a template) and a step added in a form, checked
like the YAML editor's text (a wrong value or template refused with its line, nothing
applied), shown as a plan and applied to the customization layer with history."""

from __future__ import annotations

import html

import pytest
from browser.support import ADMIN, SELLER, Client, make_app, world

from xrm.storage import history

URL = "/admin/processes/proposal_follow_up/edit"


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    with world(tmp_path_factory.mktemp("process-editor")) as built:
        yield built


@pytest.fixture
def admin(w):
    return Client(make_app(w.store)).login(ADMIN)


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def fields(page: str) -> dict[str, str]:
    """The step values the editor offers: name -> value."""
    import re

    return {
        html.unescape(m.group(1)): html.unescape(m.group(2))
        for m in re.finditer(r'name="(v\|[^"]+)" value="([^"]*)"', page)
    }


def test_the_editor_shows_each_step_with_its_values(w, admin):
    page = admin.get(URL)
    assert page.status_code == 200
    values = fields(page.get_data(as_text=True))
    assert values["v|0|to"] == "owner" and values["v|0|template"] == "proposal_sent"
    assert values["v|1|until"] == "close_date" and values["v|1|offset"] == "-3d"
    assert values["v|2|"] == "[stage, not_in, [won, lost]]"  # a condition, as YAML
    assert values["v|2.then.0|subject"] == "Follow up: {{ record.name }}"
    assert 'data-testid="process-enabled"' in text(page) and "checked" in text(page)
    assert 'data-testid="process-edit"' in text(admin.get("/admin/processes/proposal_follow_up"))


def test_switch_off_change_a_delay_and_add_a_step_through_the_plan(w, admin):
    values = fields(admin.get(URL).get_data(as_text=True))
    values["v|1|offset"] = "-5d"
    values["v|2.then.0|subject"] = "Chase: {{ record.name }}"
    posted = {**values, "new_kind": "wait", "new_spec": "for: 1d", "new_name": "pause"}
    plan = admin.post(URL, posted)  # "enabled" not sent: switched off
    assert plan.status_code == 200, text(plan)
    assert 'data-testid="apply"' in text(plan)
    process = w.store.refresh().processes["proposal_follow_up"]
    assert process.enabled and len(process.steps) == 3  # nothing applied yet
    raw = plan.get_data(as_text=True)
    documents = html.unescape(raw.split('name="documents" value="')[1].split('"')[0])
    done = admin.post(
        "/admin/definitions/process/proposal_follow_up/apply", {"documents": documents}
    )
    assert done.status_code == 303
    process = w.store.refresh().processes["proposal_follow_up"]
    assert not process.enabled
    assert [s.kind for s in process.steps] == ["notify", "wait", "if", "wait"]
    assert process.steps[1].spec["offset"] == "-5d"
    assert process.steps[3].title == "pause"
    (latest, *_rest) = history.entries(w.store, "process", "proposal_follow_up")
    assert "enabled: false" in latest["after_text"] and latest["user_id"] == w.admin
    assert "Chase: {{ record.name }}" in latest["after_text"]
    page = text(admin.get(URL))
    assert 'id="process-enabled" ' in page and "checked data-testid" not in page
    # the YAML editor shows the same definition, customized
    assert "customized" in text(admin.get("/admin/definitions/process/proposal_follow_up"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v|0|template": "no_such_template"}, "no_such_template"),
        ({"v|1|offset": "three days"}, "three days"),
        ({"v|2|": "[stage, not_in, [won, lost]"}, "v|2|"),
        ({"new_kind": "wait", "new_spec": "for: [1d"}, "New step:"),
        ({"new_kind": "notify", "new_spec": "to: owner\ntemplat: x"}, "templat"),
    ],
)
def test_a_value_the_step_cannot_take_is_refused_and_nothing_applied(w, admin, change, message):
    version = w.store.refresh().version
    values = {**fields(admin.get(URL).get_data(as_text=True)), "enabled": "1", **change}
    response = admin.post(URL, values)
    assert response.status_code == 422
    page = text(response)
    assert 'data-testid="editor-problems"' in page
    if message != "v|2|":
        assert message in page
    assert w.store.refresh().version == version
    # what was typed is still in the form
    for key, value in change.items():
        if key.startswith("v|"):
            assert value in page


def test_only_administrators_edit_processes(w):
    seller = Client(make_app(w.store)).login(SELLER)
    assert seller.get(URL).status_code == 403
    assert seller.post(URL, {"enabled": "1"}).status_code == 403

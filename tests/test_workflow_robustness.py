"""One hostile row must not stop the workflow engine for everybody: a change whose values
make a trigger's arithmetic fail is dead-lettered with its error while the changes behind
it go on; it shows on the admin's instances page and is retried from there or from the
command line once the data is fixed.  The runner parks the one instance that breaks, not
its batch.  And the write path refuses the durations and dates that caused it (422)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import html
import json

import pytest
import sqlalchemy as sa
from browser.support import PASSWORD, Client, make_app
from conftest import SOLUTIONS, write_pack
from workflow_pack import START, MovableClock

from xrm import workflow
from xrm.storage import tables as T
from xrm.storage.records import ValidationFailed
from xrm.storage.tables import tables_for
from xrm.web import create_app
from xrm.workflow import Worker
from xrm.workflow.commands import add_process

HUGE = 99_999_999_999_999  # seconds: fits a bigint, not a timedelta
YEAR_ONE = dt.datetime(1, 1, 1, 0, 10, tzinfo=dt.UTC)


@pytest.fixture
def core(database):
    clock = MovableClock()
    store = database.open(clock=clock)
    store.install([SOLUTIONS / "core"])
    ann = store.add_user("ann@example.com", "Ann", password=PASSWORD, roles=["user"])
    yield store, clock, ann, Worker(store, retry_base=60)
    store.close()


def meeting(store, user, subject: str, *, hours: float = 2, reminder: str | None = "15m"):
    values = {"subject": subject, "starts_at": START + dt.timedelta(hours=hours)}
    if reminder is not None:
        values["reminder"] = reminder
    return store.records("meeting", user).create(values)


def write_row(store, entity: str, record_id: int, **values) -> None:
    """Change a record straight in its table, around the records service and its bounds."""
    table = tables_for(store.catalog)[entity]
    with store.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == record_id).values(**values))


def write_change(store, entity: str, record_id: int, changes, event: str = "updated") -> int:
    """An outbox row written straight to the table, as no records service would."""
    o = T.outbox
    with store.engine.begin() as conn:
        return conn.execute(
            o.insert()
            .values(
                entity=entity,
                record_id=record_id,
                event=event,
                changes=changes,
                user_id=None,
                at=store.clock.now(),
            )
            .returning(o.c.id)
        ).scalar_one()


def pending_outbox(store) -> int:
    o = T.outbox
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(o).where(o.c.processed_at.is_(None))
        ).scalar_one()


def reminders(store, record_id: int) -> list[dict]:
    return workflow.instances(store, process="meeting_reminder", record_id=record_id)


def letter_of(store, outbox_id: int) -> dict:
    [letter] = [d for d in workflow.dead_letters(store, status=None) if d["outbox_id"] == outbox_id]
    return letter


def hostile_meetings(store, ann, worker) -> dict:
    """Two meetings whose stored values overflow the reminder's arithmetic, their changes in
    the outbox between two ordinary meetings' changes."""
    long = meeting(store, ann, "Long reminder")
    early = meeting(store, ann, "Early start")
    worker.run_once()
    before = meeting(store, ann, "Before")
    write_row(store, "meeting", long["id"], reminder=HUGE)
    write_row(store, "meeting", early["id"], starts_at=YEAR_ONE)
    bad_long = write_change(store, "meeting", long["id"], {"reminder": [900, HUGE]})
    bad_early = write_change(
        store,
        "meeting",
        early["id"],
        {"starts_at": [long["starts_at"].isoformat(), "0001-01-01T00:10:00+00:00"]},
    )
    after = meeting(store, ann, "After")
    return {
        "long": long,
        "early": early,
        "before": before,
        "after": after,
        "bad_long": bad_long,
        "bad_early": bad_early,
    }


# ------------------------------------------------------------------------ the consumer
def test_a_hostile_change_is_dead_lettered_and_the_changes_around_it_go_through(core):
    store, clock, ann, worker = core
    world = hostile_meetings(store, ann, worker)
    worker.run_once()
    assert pending_outbox(store) == 0
    # the ordinary changes of the same batch, before and after the hostile ones, went through
    for name in ("before", "after"):
        [timer] = reminders(store, world[name]["id"])
        assert timer["status"] == "waiting"
        assert timer["due_at"] == START + dt.timedelta(hours=2, minutes=-15)
    long_letter = letter_of(store, world["bad_long"])
    early_letter = letter_of(store, world["bad_early"])
    for letter, record in ((long_letter, world["long"]), (early_letter, world["early"])):
        assert letter["status"] == "failed" and letter["attempts"] == 1
        assert letter["entity"] == "meeting" and letter["record_id"] == record["id"]
        assert letter["event"] == "updated"
        assert letter["error"].startswith("OverflowError:")
        assert letter["failed_at"] == START
    assert long_letter["changes"] == {"reminder": [900, HUGE]}
    # and the engine keeps working: the ordinary reminders fire on time
    clock.set(START + dt.timedelta(hours=2, minutes=-15))
    worker.run_once()
    titles = {n["title"] for n in workflow.notifications(store, ann)}
    assert {"Reminder: Before", "Reminder: After"} <= titles
    assert [d["id"] for d in workflow.dead_letters(store)] == sorted(
        [long_letter["id"], early_letter["id"]], reverse=True
    )


def test_a_dead_lettered_change_runs_again_once_its_data_is_fixed(core):
    store, clock, ann, worker = core
    world = hostile_meetings(store, ann, worker)
    worker.run_once()
    letter = letter_of(store, world["bad_long"])
    clock.advance(minutes=5)
    # still broken: it fails again, counted
    error = workflow.retry_change(store, letter["id"])
    assert error.startswith("OverflowError:")
    again = workflow.dead_letter(store, letter["id"])
    assert again["status"] == "failed" and again["attempts"] == 2
    assert again["failed_at"] == START + dt.timedelta(minutes=5)
    [untouched] = reminders(store, world["long"]["id"])  # the timer from before the change
    assert untouched["status"] == "waiting"
    # fixed (straight in the table, so that only the retry can have read it): it goes through
    write_row(store, "meeting", world["long"]["id"], reminder=1800)
    assert workflow.retry_change(store, letter["id"]) == ""
    done = workflow.dead_letter(store, letter["id"])
    assert done["status"] == "done" and done["resolved_at"] == clock.now()
    timers = [t for t in reminders(store, world["long"]["id"]) if t["status"] == "waiting"]
    assert [t["due_at"] for t in timers] == [START + dt.timedelta(hours=2, minutes=-30)]
    # the first attempt's key: a second delivery of the same change would start nothing
    assert timers[0]["key"].startswith(f"date:meeting_reminder:{world['long']['id']}:")
    with pytest.raises(LookupError):
        workflow.retry_change(store, letter["id"])
    assert [d["id"] for d in workflow.dead_letters(store)] == [
        letter_of(store, world["bad_early"])["id"]
    ]


def test_malformed_outbox_rows_are_dead_lettered_too(core, database):
    store, clock, ann, worker = core
    target = meeting(store, ann, "Target")
    worker.run_once()
    not_a_map = write_change(store, "meeting", target["id"], [1, 2])
    behind = meeting(store, ann, "Behind")
    worker.run_once()
    assert letter_of(store, not_a_map)["error"].startswith(("TypeError:", "ValueError:"))
    assert [t["status"] for t in reminders(store, behind["id"])] == ["waiting"]
    if database.dialect == "sqlite":  # PostgreSQL refuses text that is not JSON in the first place
        with store.engine.begin() as conn:
            ident = conn.execute(
                sa.text(
                    "INSERT INTO xrm_outbox (entity, record_id, event, changes, at) "
                    "VALUES ('meeting', :id, 'updated', '{not json', '2025-03-03 08:00:00.000000') "
                    "RETURNING id"
                ),
                {"id": target["id"]},
            ).scalar_one()
        last = meeting(store, ann, "Last")
        worker.run_once()
        unreadable = letter_of(store, ident)
        assert unreadable["error"].startswith("JSONDecodeError:")
        # what could be read is kept; a retry handles the change without its old values
        assert (unreadable["entity"], unreadable["record_id"]) == ("meeting", target["id"])
        assert unreadable["changes"] is None
        assert [t["status"] for t in reminders(store, last["id"])] == ["waiting"]
        assert workflow.retry_change(store, unreadable["id"]) == ""
    assert pending_outbox(store) == 0


# ------------------------------------------------------------------------ the runner
def test_an_instance_whose_record_cannot_be_read_is_parked_and_its_batch_runs(core):
    store, clock, ann, worker = core
    readable = meeting(store, ann, "Readable", hours=1)
    unreadable = meeting(store, ann, "Unreadable", hours=1)
    worker.run_once()
    table = tables_for(store.catalog)["meeting"].name
    with store.engine.begin() as conn:  # no Python datetime holds year 10000
        conn.execute(
            sa.text(f"UPDATE {table} SET ends_at = '10000-01-01 00:00:00' WHERE id = :id"),
            {"id": unreadable["id"]},
        )
    clock.set(START + dt.timedelta(minutes=45))
    worker.run_once()
    assert workflow.unread_count(store, ann) == 1  # the readable meeting's reminder
    [ran] = reminders(store, readable["id"])
    assert ran["status"] == "done"
    [parked] = reminders(store, unreadable["id"])
    assert parked["status"] == "failed" and "10000" in parked["error"]
    history = workflow.instance(store, parked["id"])["history"]
    assert history[-1]["kind"] == "park" and history[-1]["status"] == "failed"
    # parked, not retried forever: the next passes have nothing to do
    clock.advance(hours=2)
    assert "ran" not in worker.run_once()


def test_a_step_whose_due_time_overflows_fails_its_own_instance(database, tmp_path):
    pack = write_pack(
        tmp_path,
        "eve",
        {
            "processes/day_before.yaml": (
                "process: day_before\n"
                "entity: meeting\n"
                "on: {created: true}\n"
                "max_attempts: 1\n"
                "steps:\n"
                "  - wait: {until: starts_at, offset: -1d}\n"
                "  - notify: {to: owner, template: meeting_reminder}\n"
            )
        },
        depends={"core": ">=1.0"},
    )
    clock = MovableClock()
    store = database.open(clock=clock)
    try:
        store.install([SOLUTIONS / "core", pack])
        ann = store.add_user("ann@example.com", "Ann", roles=["user"])
        ordinary = meeting(store, ann, "Ordinary", hours=48, reminder=None)
        hostile = meeting(store, ann, "Hostile", hours=48, reminder=None)
        write_row(store, "meeting", hostile["id"], starts_at=YEAR_ONE)
        Worker(store, retry_base=60).run_once()
        [waits] = workflow.instances(store, process="day_before", record_id=ordinary["id"])
        assert waits["status"] == "waiting"
        assert waits["due_at"] == START + dt.timedelta(hours=24)
        [failed] = workflow.instances(store, process="day_before", record_id=hostile["id"])
        assert failed["status"] == "failed" and "OverflowError" in failed["error"]
    finally:
        store.close()


# ------------------------------------------------------------------------ admin page and CLI
def test_failed_changes_are_listed_for_admins_and_retried_there(core):
    store, clock, ann, worker = core
    store.add_user("ops@example.com", "Olga Ops", password=PASSWORD, roles=["administrator"])
    world = hostile_meetings(store, ann, worker)
    worker.run_once()
    letter = letter_of(store, world["bad_long"])
    app = make_app(store)
    admin = Client(app).login("ops@example.com")
    page = admin.get("/admin/instances").get_data(as_text=True)
    assert 'data-testid="failed-changes"' in page
    row = page[page.index(f'data-change="{letter["id"]}"') :]
    row = row[: row.index("</tr>")]
    assert f'href="/r/meeting/{world["long"]["id"]}"' in row and "Long reminder" in row
    assert html.escape(letter["error"][:60]) in row
    assert "The record was updated" in row
    # a record's own view lists only its changes
    other = admin.get(f"/admin/instances?entity=meeting&record_id={world['after']['id']}")
    assert 'data-testid="failed-changes"' not in other.get_data(as_text=True)
    retry_url = f"/admin/changes/{letter['id']}/retry"
    assert admin.post(retry_url, csrf=False).status_code == 400  # CSRF protected
    agent = Client(app).login("ann@example.com")
    assert agent.post(retry_url).status_code == 403  # administrators only
    assert workflow.dead_letter(store, letter["id"])["attempts"] == 1
    assert admin.post("/admin/changes/999999/retry").status_code == 404
    # still broken: told so, counted
    response = admin.post(retry_url, {"next": "/admin/instances"})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/instances"
    assert "failed again: OverflowError" in html.unescape(
        admin.get("/admin/instances").get_data(as_text=True)
    )
    assert workflow.dead_letter(store, letter["id"])["attempts"] == 2
    write_row(store, "meeting", world["long"]["id"], reminder=600)
    admin.post(retry_url)
    page = admin.get("/admin/instances").get_data(as_text=True)
    assert f"Change #{letter['id']} went through." in page
    assert f'data-change="{letter["id"]}"' not in page
    assert workflow.dead_letter(store, letter["id"])["status"] == "done"


def xrm_process(store, *argv: str) -> int:
    """``xrm process ...`` with its real parser and handler, on the test's store."""
    parser = argparse.ArgumentParser(prog="xrm")
    add_process(parser.add_subparsers(), lambda args: contextlib.nullcontext(store))
    args = parser.parse_args(["process", *argv])
    return args.handler(args)


def test_the_command_line_lists_and_retries_dead_letters(core, capsys):
    store, clock, ann, worker = core
    world = hostile_meetings(store, ann, worker)
    worker.run_once()
    letter = letter_of(store, world["bad_early"])
    assert xrm_process(store, "dead-letters") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    [line] = [x for x in lines if x.startswith(f"{letter['id']}\t")]
    assert f"\tfailed\tmeeting:{world['early']['id']}\tupdated\t1\t" in line
    assert "OverflowError" in line
    assert xrm_process(store, "retry-change", str(letter["id"])) == 1
    assert "failed again: OverflowError" in capsys.readouterr().err
    write_row(store, "meeting", world["early"]["id"], starts_at=START + dt.timedelta(days=1))
    assert xrm_process(store, "retry-change", str(letter["id"])) == 0
    assert capsys.readouterr().out == f"change {letter['id']} went through\n"
    assert xrm_process(store, "retry-change", str(letter["id"])) == 1
    assert "is not waiting for a retry" in capsys.readouterr().err
    assert xrm_process(store, "dead-letters", "--all", "--json") == 0
    listed = {d["id"]: d["status"] for d in json.loads(capsys.readouterr().out)}
    assert listed[letter["id"]] == "done" and len(listed) == 2


# ------------------------------------------------------------------------ the write path
def test_the_records_service_refuses_durations_and_moments_out_of_range(core):
    store, clock, ann, worker = core
    far = store.add_user("far@example.com", "Far", roles=["user"], time_zone="Pacific/Kiritimati")
    meetings = store.records("meeting", far)
    base = {"subject": "x", "starts_at": "2026-01-01T10:00:00Z"}
    cases = [
        ({"reminder": HUGE}, "reminder", "must be at most 100 years (36500d) long"),
        ({"reminder": "99999999999999d"}, "reminder", "must be at most 100 years (36500d) long"),
        ({"starts_at": "0001-01-01T00:10:00Z"}, "starts_at", "(UTC)"),
        ({"starts_at": "9999-12-31T23:00:00Z"}, "starts_at", "(UTC)"),
        # read in the user's zone (UTC+14), it would be before year 1
        ({"starts_at": "0001-01-01T00:10"}, "starts_at", "(UTC)"),
        ({"remind_at": dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)}, "remind_at", "(UTC)"),
    ]
    for values, name, message in cases:
        with pytest.raises(ValidationFailed) as exc:
            meetings.create({**base, **values})
        assert list(exc.value.errors) == [name], values
        assert exc.value.errors[name][0].endswith(message), exc.value.errors
        assert "between 1000-01-01 and 9899-12-31" in exc.value.errors[name][0] or (
            name == "reminder"
        )
    record = meetings.create({**base, "reminder": "36500d"})  # the longest allowed
    assert record["reminder"] == 36_500 * 86_400
    with pytest.raises(ValidationFailed) as exc:
        meetings.update(record["id"], {"reminder": 36_500 * 86_400 + 1})
    assert exc.value.errors == {"reminder": ["must be at most 100 years (36500d) long"]}
    assert pending_outbox(store) == 1  # only the valid create reached the outbox


def test_the_api_answers_out_of_range_durations_and_moments_with_a_422(core):
    store, clock, ann, worker = core
    token = store.create_token(ann, "tests")
    client = create_app(store, {"TESTING": True}).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    base = {"subject": "x", "starts_at": "2026-01-01T10:00:00Z"}
    for values, name in (
        ({"reminder": HUGE}, "reminder"),
        ({"starts_at": "0001-01-01T00:10:00Z"}, "starts_at"),
        ({"starts_at": "9999-12-31T23:00:00+00:00"}, "starts_at"),
        ({"ends_at": "0001-01-01T00:10:00+14:00"}, "ends_at"),
    ):
        response = client.post("/api/v1/meeting", json={**base, **values}, headers=headers)
        assert response.status_code == 422, response.get_data(as_text=True)
        assert response.mimetype == "application/problem+json"
        body = response.get_json()
        assert list(body["errors"]) == [name], body
    created = client.post("/api/v1/meeting", json=base, headers=headers).get_json()
    response = client.patch(
        f"/api/v1/meeting/{created['id']}",
        json={"remind_at": "9999-12-31T23:00:00Z"},
        headers=headers,
    )
    assert response.status_code == 422 and list(response.get_json()["errors"]) == ["remind_at"]
    assert "9899-12-31" in response.get_json()["errors"]["remind_at"][0]
    # the bounds are in the API's own description of the fields
    schema = client.get("/api/v1/openapi.json", headers=headers).get_json()
    inputs = schema["components"]["schemas"]["meeting.Input"]["properties"]
    assert inputs["reminder"]["maximum"] == 36_500 * 86_400
    assert "9899-12-31" in inputs["starts_at"]["description"]

"""The demo makes every shipped report and dashboard show something: set up with sample
data, then run each report as the demo's manager and each dashboard, on both databases."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from conftest import assert_widgets_show_figures

from xrm.reports.dashboards import run_dashboard
from xrm.reports.run import run_report
from xrm.solutions.setup import SetupAnswers, run_setup
from xrm.storage.store import Clock
from xrm.storage.tables import stage_history

PASSWORD = "Correct-Horse-42-battery"
#: A Wednesday in the middle of a month, so "this month" has days behind and ahead.
NOW = dt.datetime(2026, 6, 17, 11, 30, tzinfo=dt.UTC)


class FixedClock(Clock):
    def now(self) -> dt.datetime:
        return NOW


def answers() -> SetupAnswers:
    return SetupAnswers(
        sample_data=True,
        time_zone="Europe/Berlin",
        admin_password=PASSWORD,
        modules=("core", "sales"),
    )


@pytest.fixture
def demo(database):
    store = database.open(clock=FixedClock())
    result = run_setup(store, answers())
    yield store, result
    store.close()


def test_every_shipped_report_and_dashboard_shows_figures(demo):
    store, result = demo
    catalog = store.refresh()
    manager = next(m for m in result.demo_users if m.role == "manager")
    principal = store.principal(manager.id)
    assert catalog.reports and catalog.dashboards
    for name, report in catalog.reports.items():
        out = run_report(store, report, {}, principal)
        assert out.rows, f"report {name} is empty"
        figures = [v for row in out.rows for k, v in row.items() if k not in report.group_by]
        assert any(v not in (None, 0) for v in figures), f"report {name} has only zeros"
    for name, dashboard in catalog.dashboards.items():
        out = run_dashboard(store, dashboard, {}, principal, fresh=True)
        assert_widgets_show_figures(out, f"dashboard {name}")


def test_the_funnel_comes_from_stage_changes_over_past_months(demo):
    store, result = demo
    catalog = store.refresh()
    manager = next(m for m in result.demo_users if m.role == "manager")
    out = run_report(
        store, catalog.reports["opportunity_conversion"], {}, store.principal(manager.id)
    )
    rows = {row["stage"]: row for row in out.rows}
    assert len([r for r in out.rows if r["entered"]]) >= 3
    assert any(0 < (r["conversion"] or 0) < 100 for r in out.rows)
    medians = {r["median_days"] for r in out.rows if r["median_days"] is not None}
    assert len(medians) >= 3  # stays differ per stage

    h = stage_history  # the platform's table, so moments read back as moments
    with store.engine.connect() as conn:
        entered = dict(
            conn.execute(
                sa.select(h.c.stage, sa.func.count(sa.distinct(h.c.record_id)))
                .where(h.c.entity == "opportunity")
                .group_by(h.c.stage)
            ).all()
        )
        stays = conn.execute(
            sa.select(h.c.entered_at, h.c.left_at).where(h.c.entity == "opportunity")
        ).all()
    for stage, row in rows.items():  # every deal's history lies in the last twelve months
        assert row["entered"] == entered.get(stage, 0)
    first = min(s.entered_at for s in stays)
    assert NOW - dt.timedelta(days=330) < first < NOW - dt.timedelta(days=60)
    for s in stays:  # real moves: each stay ends after it began, and in the past
        assert s.left_at is None or s.left_at > s.entered_at


def test_targets_follow_the_sellers_and_a_seller_sees_their_teams_figures(demo):
    store, result = demo
    catalog = store.refresh()
    seller = next(m for m in result.demo_users if m.role == "user")
    targets = store.records("sales_target").query(limit=1000).rows
    owners = {t["owner"] for t in targets}
    assert {m.id for m in result.demo_users} <= owners
    months = {(t["owner"], t["period"].replace(day=1)) for t in targets}
    assert len(months) == len(targets)  # one per owner and month

    report = catalog.reports["pipeline_by_stage"]
    out = run_report(store, report, {}, store.principal(seller.id))
    tm = sa.table("xrm_team_member", sa.column("team_id"), sa.column("user_id"))
    o = sa.table("opportunity", sa.column("owner"), sa.column("stage"))
    with store.engine.connect() as conn:
        team = sa.select(tm.c.team_id).where(tm.c.user_id == seller.id).scalar_subquery()
        members = sa.select(tm.c.user_id).where(tm.c.team_id == team)
        expected = conn.execute(
            sa.select(sa.func.count())
            .select_from(o)
            .where(o.c.stage.not_in(["won", "lost"]), o.c.owner.in_(members))
        ).scalar()
        everyone = conn.execute(
            sa.select(sa.func.count()).select_from(o).where(o.c.stage.not_in(["won", "lost"]))
        ).scalar()
    assert out.totals["deals"] == expected < everyone  # the admin's deals are not the team's


def test_a_second_demo_adds_nothing(demo):
    store, _ = demo
    tables = ("opportunity", "lead", "sales_target", "task", "xrm_stage_history")
    with store.engine.connect() as conn:
        before = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in tables}
    again = run_setup(store, answers())
    assert again.sample_counts == {} and again.demo_users == []
    with store.engine.connect() as conn:
        after = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in tables}
    assert after == before and before["xrm_stage_history"] > before["opportunity"]


def test_a_demo_that_fails_at_its_last_step_leaves_nothing(database, monkeypatch):
    """All the invented sample data or none of it: the stage moves are dated inside the one
    transaction, so a failure after months of history were walked rolls them back too; a
    second try completes the demo without doubling the packs' own records."""
    from xrm.solutions import demo as sample

    def broken(*args, **kwargs):
        raise RuntimeError("the targets could not be made")

    store = database.open(clock=FixedClock())
    try:
        monkeypatch.setattr(sample, "_fill_targets", broken)
        with pytest.raises(RuntimeError, match="targets"):
            run_setup(store, answers())
        # the invented samples are all rolled back; the packs' own sample data (demo/,
        # written by the install before) stays, and is found by its keys next time
        tables = ("task", "call", "meeting", "sales_target")
        with store.engine.connect() as conn:
            counts = {
                t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in tables
            }
            deals = conn.execute(sa.text("SELECT COUNT(*) FROM opportunity")).scalar()
        assert counts == dict.fromkeys(tables, 0)
        assert not store.settings().get("sample_data")
        monkeypatch.undo()
        run_setup(store, answers())  # tried again: the whole demo, the pack's records once
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM opportunity")).scalar() == deals
            assert conn.execute(sa.text("SELECT COUNT(*) FROM sales_target")).scalar() > 0
    finally:
        store.close()

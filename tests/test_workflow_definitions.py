"""Process, SLA, calendar and template definitions: schema and cross-check errors at their
``file:line:column``, the compiled model, the published schemas, and the SVG diagram."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from xrm.metadata import check, load_catalog
from xrm.metadata.processes import parse_offset, parse_span
from xrm.metadata.schemas import SCHEMA_DIR
from xrm.workflow import diagram

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "xrm" / "solutions" / "packs" / "core"
SALES = ROOT / "xrm" / "solutions" / "packs" / "sales"

MANIFEST = "solution: p\nversion: 1.0.0\ndepends: {core: '>=1.0'}\n"
ENTITY = """\
entity: ticket
fields:
  subject:   {type: text, required: true}
  priority:  {type: choice, options: [low, normal, high, urgent], default: normal}
  status:    {type: choice, options: [new, waiting, resolved], default: new}
  due_on:    {type: date}
  agent:     {type: user}
  contact_email: {type: email}
  account:   {type: lookup, to: account}
stages:
  field: status
  steps: {new: {next: [waiting, resolved]}, waiting: {}, resolved: {roles: [manager]}}
"""
TEMPLATES = """\
templates:
  hello:
    subject: {en: "Hello {{ record.subject }}", ru: "Привет"}
    body: "Ticket {{ record.id }}"
"""


@pytest.fixture
def problems_of(tmp_path, monkeypatch):
    """Write pack p (with a ticket entity and a template) plus extra files; return problems."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XRM_SOLUTIONS_PATH", raising=False)

    def run(files: dict[str, str]) -> list[str]:
        base = {
            "p/solution.yaml": MANIFEST,
            "p/entities/ticket.yaml": ENTITY,
            "p/templates/t.yaml": TEMPLATES,
        }
        for relative, text in {**base, **files}.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        _catalog, problems = check(["p", str(CORE)])
        return [str(p) for p in problems]

    return run


def process(body: str) -> dict[str, str]:
    return {"p/processes/x.yaml": "process: x\nentity: ticket\n" + textwrap.dedent(body)}


def test_the_shipped_packs_define_their_processes():
    catalog = load_catalog([SALES])
    assert {"task_reminder", "meeting_reminder", "proposal_follow_up", "opportunity_closed"} <= set(
        catalog.processes
    )
    follow_up = catalog.processes["proposal_follow_up"]
    assert follow_up.entity == "opportunity"
    assert [t.kind for t in follow_up.triggers] == ["enter_stage"]
    assert follow_up.triggers[0].stages == ("proposal",)
    assert [s.kind for s in follow_up.walk()] == ["notify", "wait", "if", "activity"]
    assert follow_up.step_at((2, "then", 0)).kind == "activity"
    reminder = catalog.processes["task_reminder"].trigger("date")
    assert (reminder.date_field, reminder.before_field, reminder.offset) == ("due", "reminder", 0)
    assert catalog.templates["proposal_sent"].subject.get("ru").startswith("Стадия")


def test_a_good_process_compiles(problems_of):
    assert (
        problems_of(
            process(
                """\
            on: {updated: [priority], created: true}
            if: [priority, in, [high, urgent]]
            was: [priority, not_in, [high, urgent]]
            steps:
              - notify: {to: [owner, agent, contact_email, role:manager, email:boss@example.com], template: hello}
              - assign: {to: team:support, method: least_loaded, load: [status, ne, resolved]}
              - wait: {condition: [status, eq, resolved], timeout: 2d}
                timed_out:
                  - set: {priority: urgent}
              - approval: {approvers: [role:manager, user:cfo@example.com], require: all, timeout: 3d}
                approved: [{set: {status: resolved}}]
                rejected: [{stop: true}]
              - webhook: {url: "https://example.com/hook/{{ record.id }}", secret: {env: HOOK}, body: {id: "{{ record.id }}"}}
              - activity: {subject: "Call about {{ record.subject }}", due: +1d, reminder: 15m}
              - create: {entity: note, values: {body: "{{ record.account.name }}", regarding: "ticket:{{ record.id }}"}}
              - start: {process: x}
            """
            )
        )
        == []
    )


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "on: {updated: [prority]}\nsteps: [{stop: true}]\n",
            "p/processes/x.yaml:3:16: processes.x: on.updated: ticket has no field 'prority'; did you mean 'priority'?",
        ),
        (
            "on: {created: true}\nif: [stauts, eq, new]\nsteps: [{stop: true}]\n",
            "p/processes/x.yaml:4:5: processes.x: if: stauts: ticket has no field 'stauts'",
        ),
        (
            "on: {created: true}\nsteps:\n  - notify: {to: owner, template: helo}\n",
            "p/processes/x.yaml:5:35: processes.x: unknown template 'helo'; did you mean 'hello'?",
        ),
        (
            "on: {created: true}\nsteps:\n  - notify: {to: role:boss, template: hello}\n",
            "p/processes/x.yaml:5:18: processes.x: unknown role 'boss'",
        ),
        (
            "on: {created: true}\nsteps:\n  - notify: {to: subject, template: hello}\n",
            "recipient 'subject' is a text field; expected a user or email field",
        ),
        (
            "on: {created: true}\nsteps:\n  - set: {subjet: x}\n",
            "p/processes/x.yaml:5:11: processes.x: ticket has no field 'subjet'; did you mean 'subject'?",
        ),
        (
            "on: {created: true}\nsteps:\n  - set: {subject: '{{ record.nme }}'}\n",
            "subject: ticket has no field 'nme'",
        ),
        (
            "on: {created: true}\nsteps:\n  - set: {subject: '{{ recrod.subject }}'}\n",
            "unknown name 'recrod' in template; did you mean 'record'?",
        ),
        (
            "on: {created: true}\nsteps:\n  - set: {subject: '{{ record.subject '}\n",
            "template syntax",
        ),
        (
            "on: {created: true}\nsteps:\n  - create: {entity: tsk, values: {subject: x}}\n",
            "create: unknown entity 'tsk'; did you mean 'task'?",
        ),
        (
            "on: {created: true}\nsteps:\n  - wait: {until: subject}\n",
            "wait: until must be a date or datetime field of ticket",
        ),
        (
            "on: {created: true}\nsteps:\n  - wait: {for: 3 days}\n",
            "for: '3 days' is not a duration",
        ),
        (
            "on: {created: true}\nsteps:\n  - notfy: {to: owner}\n",
            "unknown step (notfy); expected one of set, create",
        ),
        (
            "on: {created: true}\nsteps:\n  - notify: {to: owner, template: hello, chanels: [app]}\n",
            "unknown key 'chanels'",
        ),
        (
            "on: {created: true}\nsteps:\n  - start: {process: nope}\n",
            "starts unknown process 'nope'",
        ),
        (
            "on: {date: {field: subject}}\nsteps: [{stop: true}]\n",
            "on.date: 'subject' is a text field; a date trigger needs a date or datetime field",
        ),
        (
            "on: {date: {field: due_on, offset: soon}}\nsteps: [{stop: true}]\n",
            "'soon' is not a duration",
        ),
        ("on: {schedule: '61 * * * *'}\nsteps: [{stop: true}]\n", "is not a cron expression"),
        (
            "on: {enter_stage: closed}\nsteps: [{stop: true}]\n",
            "on.enter_stage: 'closed' is not a stage of ticket",
        ),
        (
            "on: {created: true}\nwas: [status, eq, new]\nsteps: [{stop: true}]\n",
            "was: applies to updated or stage triggers only",
        ),
        (
            "on: {created: true}\nsteps:\n  - assign: {to: email:x@example.com}\n",
            "an email address is not a user",
        ),
        (
            "on: {created: true}\nsteps:\n  - wait: {condition: [status, eq, new]}\n    timed_out: [{stop: true}]\n",
            "timed_out: needs a timeout: in the wait",
        ),
        (
            "on: {manual: {roles: [boss]}}\nsteps: [{stop: true}]\n",
            "on.manual: unknown role 'boss'",
        ),
    ],
)
def test_mistakes_are_reported_where_they_are(problems_of, body, expected):
    problems = problems_of(process(body))
    assert any(expected in p for p in problems), problems


def test_on_is_read_as_on_not_as_yaml_true(problems_of):
    # YAML 1.1 reads a bare `on` key as the boolean true; a missing `on:` is still reported
    assert problems_of(process("on: {created: true}\nsteps: [{stop: true}]\n")) == []
    problems = problems_of(process("steps: [{stop: true}]\n"))
    assert problems == ["p/processes/x.yaml:1:1: processes.x: missing required key 'on'"]


def test_template_and_calendar_and_sla_mistakes(problems_of):
    problems = problems_of(
        {
            "p/templates/u.yaml": "templates:\n  bad:\n    entity: ticket\n    subject: '{{ record.subjct }}'\n",
            "p/processes/cal.yaml": textwrap.dedent(
                """\
                calendars:
                  office:
                    time_zone: Europe/Mosow
                    week: {weekdays: ["09:00-18:00"], sat: ["10:00-09:00"]}
                    holidays: {country: XX}
                """
            ),
            "p/processes/sla.yaml": textwrap.dedent(
                """\
                sla: ticket_sla
                entity: ticket
                calendar: offic
                priority_field: priority
                metrics:
                  resolution:
                    done: [status, eq, resolved]
                    targets: {urgent: 4h, critical: 1h, low: never}
                """
            ),
        }
    )
    text = "\n".join(problems)
    assert (
        "p/templates/u.yaml:4:14: templates.bad: subject: ticket has no field 'subjct'; did you mean 'subject'?"
        in text
    )
    assert "p/processes/cal.yaml:3:16: calendars.office: unknown time zone 'Europe/Mosow'" in text
    assert "'10:00-09:00': the end must be after the start" in text
    assert "unknown holiday country 'XX'" in text
    assert (
        "p/processes/sla.yaml:3:11: slas.ticket_sla: unknown calendar 'offic'; did you mean 'office'?"
        in text
    )
    assert "'critical' is not a value of priority" in text
    assert "'never' is not a duration" in text


def test_stage_role_guards_name_known_roles_and_sla_compiles(problems_of, tmp_path):
    files = {
        "p/processes/sla.yaml": textwrap.dedent(
            """\
            sla: ticket_sla
            entity: ticket
            priority_field: priority
            pause: [status, eq, waiting]
            warning: 80%
            metrics:
              resolution:
                done: [status, eq, resolved]
                targets: {urgent: 4h, "*": 2d}
            on_breach:
              - notify: {to: owner, template: hello}
            """
        )
    }
    assert problems_of(files) == []
    catalog = load_catalog([tmp_path / "p", CORE])
    sla = catalog.slas["ticket_sla"]
    assert sla.warning == 0.8 and sla.warning_before(3600) == 720
    assert (
        sla.target(sla.metrics[0], "urgent") == 4 * 3600
        and sla.target(sla.metrics[0], "low") == 2 * 86400
    )
    assert catalog.processes["sla:ticket_sla:breach"].steps[0].kind == "notify"


def test_spans_and_offsets():
    assert parse_span("15m") == 900 and parse_span("1h30m") == 5400 and parse_span("1w") == 604800
    assert (
        parse_offset("-3d") == -3 * 86400
        and parse_offset("+2h") == 7200
        and parse_offset("-15m") == -900
    )
    for bad in ("3", "soon", "-", ""):
        with pytest.raises(ValueError):
            parse_offset(bad)


@pytest.mark.parametrize(
    "name",
    ["process.schema.json", "sla.schema.json", "calendars.schema.json", "templates.schema.json"],
)
def test_published_workflow_schemas_are_valid(name):
    Draft202012Validator.check_schema(json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8")))


def test_shipped_processes_validate_against_the_published_schema():
    validator = Draft202012Validator(
        json.loads((SCHEMA_DIR / "process.schema.json").read_text(encoding="utf-8"))
    )
    files = sorted((ROOT / "xrm" / "solutions" / "packs").glob("*/processes/*.yaml"))
    assert files
    checked = 0
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "process" not in data:
            continue  # an SLA or calendars: processes/ holds them too
        data["on"] = data.pop(True)  # what the loader does for YAML 1.1's `on`
        assert list(validator.iter_errors(data)) == [], path
        checked += 1
    assert checked
    bad = {"process": "x", "on": {"created": True}, "steps": [{"notify": {"to": "owner"}}]}
    assert list(validator.iter_errors(bad)), "the published schema checks each step's keys"


def test_a_process_renders_as_svg():
    catalog = load_catalog([SALES])
    svg = diagram(catalog.processes["proposal_follow_up"])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "enter stage: proposal" in svg and "wait until close_date -3d" in svg
    assert svg.count('class="step ') == 4 and ">then<" in svg and ">else<" in svg
    import xml.etree.ElementTree as ET

    ET.fromstring(svg)  # well-formed

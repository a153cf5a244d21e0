"""Pack tests without code: the shipped sales scenarios pass, and a scenario that does
not hold says which expectation failed at which line — for values, created records,
notifications, emails and waiting processes — while a scenario naming what does not
exist is refused like any definition, at its line."""

from __future__ import annotations

import pytest
from conftest import SOLUTIONS, write_pack

from xrm.cli import main
from xrm.metadata import DefinitionError
from xrm.solutions.scenarios import run_scenarios

PROCESS = """
process: greet_new_account
entity: account
label: {en: Greet}
on: {created: true}
steps:
  - notify: {to: owner, template: welcome}
  - wait: {for: 2d}
  - set: {description: greeted}
"""

TEMPLATE = """
templates:
  welcome:
    entity: account
    subject: {en: "Welcome {{ record.name }}"}
    body: {en: "{{ record.name }} is new."}
"""


def scenarios(tmp_path, text: str):
    folder = write_pack(
        tmp_path / "packs",
        "probe",
        {
            "processes/greet.yaml": PROCESS,
            "templates/welcome.yaml": TEMPLATE,
            "tests/probe.yaml": text,
        },
        depends={"core": ">=1.0"},
    )
    return folder, run_scenarios([folder])


def test_shipped_sales_scenarios_pass(capsys):
    assert main(["solution", "test", "sales"]) == 0
    out = capsys.readouterr().out
    assert "PASS  sales: a won deal records the day it closed" in out
    assert " 0 failed" in out


def test_passing_and_failing_expectations_at_their_lines(tmp_path, capsys):
    folder, outcomes = scenarios(
        tmp_path,
        """
tests:
  - name: greeted after two days
    given:
      - {create: account, as: acme, values: {name: Acme}}
    when:
      - {wait: 2d}
    expect:
      - {record: acme, values: {description: greeted}}
      - {notification: {to: user, contains: Welcome Acme}}
      - {created: account, where: [name, eq, Acme], count: 1}
  - name: what does not hold
    given:
      - {create: account, as: acme, values: {name: Acme}}
    expect:
      - {record: acme, values: {description: greeted}}
      - {notification: {to: user, contains: Goodbye}}
      - {email: {to: user, subject: Goodbye}}
      - {created: account, where: [name, eq, Globex]}
      - {waiting: greet_new_account, for: acme}
""",
    )
    passed, failed = outcomes
    assert passed.passed, [str(f) for f in passed.failures]
    assert not failed.passed
    messages = [str(f).split("probe/tests/")[-1] for f in failed.failures]
    assert messages[0] == "probe.yaml:16:33: acme.description is None, expected 'greeted'"
    assert messages[1].startswith("probe.yaml:17:9: no notification to user matching")
    assert messages[1].endswith("(sent: Welcome Acme)")
    assert messages[2].startswith("probe.yaml:18:9: no email to user matching")
    assert messages[2].endswith("(sent: Welcome Acme)")
    assert messages[3] == "probe.yaml:19:19: 0 account records match, expected at least 1"
    assert len(messages) == 4  # the greeting process is still waiting: that one holds

    assert main(["solution", "test", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "PASS  probe: greeted after two days" in out
    assert "FAIL  probe: what does not hold" in out and "1 passed, 1 failed" in out


def test_a_step_that_fails_stops_its_scenario_with_the_reason(tmp_path):
    _folder, (outcome,) = scenarios(
        tmp_path,
        """
tests:
  - name: a user who may not
    user: {roles: [read_only]}
    when:
      - {create: account, as: acme, values: {name: Acme}}
    expect:
      - {record: acme, values: {name: Acme}}
""",
    )
    (failure,) = outcome.failures
    assert (failure.position.line, failure.position.column) == (6, 9)
    assert failure.message == "create account: you may not create account records"


def test_a_scenario_naming_what_does_not_exist_is_refused_at_its_line(tmp_path):
    with pytest.raises(DefinitionError) as caught:
        scenarios(
            tmp_path,
            """
tests:
  - name: typos
    user: {roles: [salez]}
    when:
      - {create: acount, values: {name: A}}
      - {update: nobody, values: {name: B}}
      - {start: greet_new_acount}
    expect:
      - {created: account, count: 1}
""",
        )
    text = str(caught.value)
    assert "tests/probe.yaml:3:5: typos: unknown role 'salez'" in text
    assert "tests/probe.yaml:6:18: typos: unknown entity 'acount'; did you mean 'account'?" in text
    assert "tests/probe.yaml:7:18: typos: no record named 'nobody' was created before this" in text
    assert "tests/probe.yaml:8:17: typos: unknown process 'greet_new_acount'" in text


def test_shipped_packs_still_check_clean():
    assert main(["check", str(SOLUTIONS)]) == 0

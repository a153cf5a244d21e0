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


# ------------------------------------------------------------------ actions and wizards
ACTION_PROCESS = """
process: mark_key
entity: account
label: {en: Mark as key account}
on: {manual: true}
steps:
  - set: {description: key account}
"""

WIZARD = """
wizards:
  quick_account:
    label: {en: Quick account}
    steps:
      - name: company
        fields:
          - {input: name, field: account.name, required: true}
          - {input: with_contact, type: boolean, default: false, label: {en: With a contact}}
      - name: person
        visible_if: [with_contact, eq, true]
        fields:
          - {input: last_name, field: contact.last_name, required: true}
    finish:
      - create: account
        as: account
        values: {name: "{{ inputs.name }}"}
      - create: contact
        as: person
        if: [with_contact, eq, true]
        values: {last_name: "{{ inputs.last_name }}", account: "{{ account.id }}"}
"""


def wizard_scenarios(tmp_path, text: str):
    folder = write_pack(
        tmp_path / "packs",
        "probe",
        {
            "processes/greet.yaml": PROCESS,
            "processes/mark_key.yaml": ACTION_PROCESS,
            "templates/welcome.yaml": TEMPLATE,
            "wizards/quick.yaml": WIZARD,
            "tests/probe.yaml": text,
        },
        depends={"core": ">=1.0"},
    )
    return run_scenarios([folder])


def test_a_wizard_runs_with_its_inputs_and_an_action_is_pressed(tmp_path):
    passed, named, refused, blocked = wizard_scenarios(
        tmp_path,
        """
tests:
  - name: a wizard makes an account and its contact, then the account is marked
    when:
      - wizard: quick_account
        inputs: {name: Acme, with_contact: true, last_name: Lee}
      - {action: mark_key, for: account}
    expect:
      - {record: account, values: {name: Acme, description: key account}}
      - {record: person, values: {last_name: Lee, account: {ref: account}}}
      - {created: contact, where: [last_name, eq, Lee], count: 1}
  - name: names chosen for the records, hidden steps skipped
    when:
      - {wizard: quick_account, inputs: {name: Solo}, names: {account: solo}}
    expect:
      - {record: solo, values: {name: Solo}}
      - {created: contact, count: 0}
  - name: a required input left out stops the scenario at the step
    when:
      - {wizard: quick_account, inputs: {with_contact: true, name: Acme}}
    expect:
      - {created: account, count: 0}
  - name: a user who may not update the record cannot press its button
    user: {roles: [read_only]}
    given:
      - {create: account, as: acme, values: {name: Acme}}
    when:
      - {action: mark_key, for: acme}
    expect:
      - {record: acme, values: {description: key account}}
""",
    )
    assert passed.passed, [str(f) for f in passed.failures]
    assert named.passed, [str(f) for f in named.failures]
    (failure,) = refused.failures
    assert (failure.position.line, failure.position.column) == (20, 9)
    assert failure.message == "wizard quick_account: step person: last_name: required"
    (failure,) = blocked.failures
    assert failure.position.line == 28
    assert failure.message == "action mark_key: you may not update account records"


def test_wizard_and_action_steps_naming_what_does_not_exist_are_refused_at_their_lines(tmp_path):
    with pytest.raises(DefinitionError) as caught:
        wizard_scenarios(
            tmp_path,
            """
tests:
  - name: typos
    given:
      - {create: contact, as: ann, values: {last_name: Lee}}
    when:
      - {wizard: quick_acount}
      - {wizard: quick_account, inputs: {nam: A}, names: {acount: x}, from: ann}
      - {action: greet_new_account, for: ann}
      - {action: mark_key}
      - {create: account, inputs: {name: A}}
    expect:
      - {created: account, count: 1}
""",
        )
    text = str(caught.value)
    for expected in (
        "7:18: typos: unknown wizard 'quick_acount'; did you mean 'quick_account'?",
        "8:42: typos: wizard quick_account has no input 'nam'; did you mean 'name'?",
        "8:59: typos: wizard quick_account has no action named 'acount' (as:)",
        "8:77: typos: wizard quick_account is not opened from contact records",
        "9:18: typos: process 'greet_new_account' has no manual trigger",
        "9:42: typos: 'ann' is a contact record; greet_new_account runs on account records",
        "10:9: typos: an action runs on a record: give for: NAME",
        "11:35: typos: inputs: only a wizard step takes it",
    ):
        assert f"tests/probe.yaml:{expected}" in text, text

"""The structured process editor in the admin area: switch a process on or off, change
the values of its steps (a delay, a template, a field value, a condition) in a form, and
add a step, without writing YAML.  The form is turned back into the process's document,
checked exactly as the YAML editor checks it (the JSON Schema and the catalog's
cross-checks, each problem with its step), shown as its plan, and applied through the
YAML editor's apply: the customization layer, in place of the earlier version, with
history.  The YAML editor (definitions.py) stays a click away for everything else."""

from __future__ import annotations

import json
from collections.abc import Iterator

import yaml
from flask import abort, render_template, request

from ....metadata.model import thaw
from ....metadata.process_schemas import BRANCHES, STEP_KINDS
from ....metadata.processes import normalize_on
from .. import context as C
from . import bp
from .definitions import _all, _check, changes


class _Bad(ValueError):
    """A value typed into the form that its step cannot take; said at the value."""


def _document(name: str) -> dict:
    entry = _all().get(("process", name))
    if entry is None or entry.get("body") is None:
        abort(404)
    document = thaw(entry["body"])
    normalize_on(document)
    return document


def _kind(step: dict) -> str | None:
    return next((k for k in step if k in STEP_KINDS), None)


def _shown(value) -> str:
    """A value as the form shows it: text as typed, anything else as YAML flow."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()


def _leaves(spec, prefix: tuple = ()) -> Iterator[tuple[str, object]]:
    """(dotted key, value) of each value of a step that is not a mapping."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield ".".join(prefix), spec


def steps_view(steps, prefix: tuple = (), depth: int = 0) -> list[dict]:
    """Every step, branches included, in reading order, with the values the form edits."""
    rows = []
    for index, step in enumerate(steps or ()):
        path = (*prefix, index)
        kind = _kind(step) if isinstance(step, dict) else None
        if kind is None:
            continue
        rows.append(
            {
                "path": ".".join(str(p) for p in path),
                "depth": depth,
                "kind": kind,
                "name": step.get("name", ""),
                "leaves": [
                    {"key": key, "text": _shown(value), "long": "\n" in _shown(value)}
                    for key, value in _leaves(step[kind])
                ],
            }
        )
        for branch in BRANCHES.get(kind, ()):
            if branch in step:
                rows.append({"branch": branch, "depth": depth + 1})
                rows += steps_view(step[branch], (*path, branch), depth + 1)
    return rows


def _step_at(steps: list, path: str) -> dict:
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = steps
    try:
        for part in parts:
            node = node[part]
    except (KeyError, IndexError, TypeError):
        raise _Bad(
            C._("Step %(path)s is gone: the process changed since the page was shown.", path=path)
        ) from None
    if not isinstance(node, dict) or _kind(node) is None:
        raise _Bad(
            C._("Step %(path)s is gone: the process changed since the page was shown.", path=path)
        )
    return node


def _typed(old, text: str, where: str):
    """What the administrator typed, taken as the kind of value it replaces: text stays
    text (templates and all), numbers and yes/no are read as such, a list or a condition
    is read as YAML."""
    if isinstance(old, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise _Bad(C._("%(where)s: expected true or false", where=where))
    if isinstance(old, int | float) and not isinstance(old, bool):
        try:
            return (
                int(text)
                if isinstance(old, int) and text.strip().lstrip("-").isdigit()
                else float(text)
            )
        except ValueError:
            raise _Bad(C._("%(where)s: expected a number", where=where)) from None
    if isinstance(old, str) or old is None:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _Bad(f"{where}: {str(exc).splitlines()[0]}") from None


def _set_leaf(spec: dict, key: str, text: str, where: str) -> None:
    parts = key.split(".")
    node = spec
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or parts[-1] not in node:
        raise _Bad(C._("%(where)s: no such value", where=where))
    node[parts[-1]] = _typed(node[parts[-1]], text, where)


def _edited(name: str, form) -> dict:
    """The process's document with the form's changes applied."""
    document = _document(name)
    document["enabled"] = form.get("enabled") == "1"
    steps = document.get("steps") or []
    for field, text in form.items():
        if not field.startswith("v|"):
            continue
        _tag, path, key = field.split("|", 2)
        step = _step_at(steps, path)
        kind = _kind(step)
        where = f"{kind} ({path}) {key}" if key else f"{kind} ({path})"
        if key == "":
            step[kind] = _typed(step[kind], text, where)
        else:
            _set_leaf(step[kind], key, text, where)
    kind = form.get("new_kind", "")
    if kind:
        if kind not in STEP_KINDS:
            raise _Bad(C._("New step: unknown kind %(kind)s", kind=kind))
        raw = form.get("new_spec", "")
        try:
            spec = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise _Bad(C._("New step: %(problem)s", problem=str(exc).splitlines()[0])) from None
        step = {kind: spec}
        if form.get("new_name", "").strip():
            step["name"] = form["new_name"].strip()
        position = form.get("new_at", "end")
        if position == "start":
            steps.insert(0, step)
        else:
            steps.append(step)
    document["steps"] = steps
    return document


def _page(name: str, document: dict, problems: list[str], status: int = 200):
    return render_template(
        "admin/process_editor.html",
        name=name,
        process=C.catalog().processes.get(name),
        enabled=document.get("enabled", True) is not False,
        steps=steps_view(document.get("steps")),
        kinds=list(STEP_KINDS),
        problems=problems,
        form=request.form if request.method == "POST" else {},
    ), status


@bp.get("/processes/<name>/edit")
def process_editor(name: str):
    return _page(name, _document(name), [])


@bp.post("/processes/<name>/edit")
def process_editor_save(name: str):
    try:
        document = _edited(name, request.form)
    except _Bad as exc:
        return _page(name, _document(name), [str(exc)], 422)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    checked, problems = _check("process", name, text)
    if problems:
        return _page(name, document, [_at_step(p, text) for p in problems], 422)
    _catalog, plan = C.store().customize_all(
        [("process", checked)], dry_run=True, replacing=[("process", name)]
    )
    return render_template(
        "admin/definition_plan.html",
        kind="process",
        name=name,
        lines=[line for line in plan.lines() if not line.startswith("! data loss")],
        documents=json.dumps([["process", checked]], ensure_ascii=False),
        revert=False,
        losses=plan.losses,
        text=text,
        diff=changes("process", name, checked),
    )


def _at_step(problem: str, text: str) -> str:
    """A problem at ``line:column`` of the generated YAML, with that line quoted, so the
    administrator sees which value it is about."""
    head, _sep, rest = problem.partition(": ")
    line, _colon, _column = head.partition(":")
    if not line.isdigit():
        return problem
    lines = text.splitlines()
    number = int(line)
    quoted = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    return f"{rest} — «{quoted}»" if quoted else rest

"""The report builder: administrators and business users make reports in the browser.

A draft (an entity, groups, measures, a pivot, a chart, the list's filter rows, sort,
limit, parameters and who sees it) is posted as a form and turned into a report document
of the same shape as a pack's ``reports/*.yaml``.  The document is written out as YAML
and read back with positions, so the pack checker itself (the JSON Schema and
``build_reports``) checks it and its ``draft:line:col`` problems are placed next to the
control that wrote that line.  A draft without problems is run by ``run_report`` as the
user (their scope and field rules) and shown by the report page's own template.

Saving puts the document in the customization layer (``Store.customize_all``), replacing
the user's earlier document of that report, so it exports with the layer like any other
definition.  A business user's report is personal (``owner``: their email); an
administrator may publish one to everyone or to roles (``roles``).  Pack reports are not
edited here: they are copied to a new name.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from types import SimpleNamespace

import yaml
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from ...metadata.aggregates import BUCKETS, GROUPABLE, ORDERED, SUMMABLE, parse_group, value_type
from ...metadata.compiler import LAYER
from ...metadata.filters import FilterError, resolve_path
from ...metadata.model import thaw
from ...metadata.packs import _validate
from ...metadata.problems import DefinitionError, Problems
from ...metadata.reports import CHART_KINDS, MAX_LIMIT, Report, build_reports
from ...metadata.source import YamlSyntaxError, load_yaml
from ...reports import ParameterError, ReportError, ReportRefused, run_report
from . import context as C
from . import filtering as F
from .guards import guard
from .lists import builder_fields, builder_row
from .reports import PERIODS, ReportView, period_label, refusal, visible

bp = guard(Blueprint("ui_report_builder", __name__))

#: Where a draft's problems point (``draft:12:5``): the YAML the builder shows.
DRAFT = "draft"
GROUP_ROWS = 3  # a report has at most three groups
MEASURE_ROWS = 3
MEASURE_KINDS = ("count", "count_distinct", "sum", "avg", "min", "max", "weighted")
#: A measure's words in its generated label, per language: "Amount (sum)".
KIND_WORDS = {
    "count": ("Records", "Записей"),
    "count_distinct": ("distinct", "различных"),
    "sum": ("sum", "сумма"),
    "avg": ("average", "среднее"),
    "min": ("minimum", "минимум"),
    "max": ("maximum", "максимум"),
    "weighted": ("weighted", "взвешенная"),
}
#: The builder's own parameters: a period on a date field, the owner, the owner's team.
PARAMETER_NAMES = ("period", "owner", "team")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: Russian letters in a name made from a title ("Мои сделки" -> moi_sdelki).
_CYRILLIC = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        "a b v g d e e zh z i i k l m n o p r s t u f kh ts ch sh shch _ y _ e iu ia".split(),
        strict=True,
    )
)


# ------------------------------------------------------------------------ the draft
@dataclass
class MeasureRow:
    kind: str = ""
    field: str = ""
    by: str = ""
    divide: str = ""


@dataclass
class Draft:
    """What the builder's form holds."""

    entity: str = ""
    title: str = ""
    name: str = ""  # empty: made from the title
    groups: list[str] = field(default_factory=list)
    pivot: str = ""
    measures: list[MeasureRow] = field(default_factory=list)
    mode: str = "all"  # the filter rows: all or any
    rows: list[F.BuilderRow] = field(default_factory=list)
    filter_json: str = ""  # a filter the rows cannot show (a copied pack report's)
    totals: bool = True
    chart: str = ""
    sort_key: str = ""
    sort_dir: str = "desc"
    limit: str = ""
    period_field: str = ""
    period_default: str = ""
    owner_param: bool = False
    team_param: bool = False
    published: bool = False
    roles: list[str] = field(default_factory=list)


def draft_of_form(form) -> Draft:
    draft = Draft(
        entity=form.get("entity", ""),
        title=form.get("title", "").strip(),
        name=form.get("name", "").strip(),
        groups=[form.get(f"group-{i}", "") for i in range(GROUP_ROWS)],
        pivot=form.get("pivot", ""),
        mode="any" if form.get("fb.mode") == "any" else "all",
        filter_json=form.get("filter", "").strip(),
        totals=bool(form.get("totals")),
        chart=form.get("chart", ""),
        sort_key=form.get("sort-key", ""),
        sort_dir="asc" if form.get("sort-dir") == "asc" else "desc",
        limit=form.get("limit", "").strip(),
        period_field=form.get("param-period", ""),
        period_default=form.get("param-period-default", ""),
        owner_param=bool(form.get("param-owner")),
        team_param=bool(form.get("param-team")),
        published=form.get("visibility") == "published",
        roles=[r for r in form.getlist("roles") if r],
    )
    draft.measures = [
        MeasureRow(
            form.get(f"measure-kind-{i}", ""),
            form.get(f"measure-field-{i}", ""),
            form.get(f"measure-by-{i}", ""),
            form.get(f"measure-divide-{i}", "").strip(),
        )
        for i in range(MEASURE_ROWS)
    ]
    paths, ops, values = (form.getlist(k) for k in ("fb.field", "fb.op", "fb.value"))
    draft.rows = [
        F.BuilderRow(p, ops[i] if i < len(ops) else "eq", values[i] if i < len(values) else "")
        for i, p in enumerate(paths)
        if p
    ]
    return draft


def draft_of_report(report: Report, copy: bool = False) -> Draft:
    """A saved report (or, to copy it, a pack's) back in the builder's controls.  What
    the builder cannot show (a choice parameter, a fourth measure) is left out."""
    draft = Draft(
        entity=report.entity,
        title=(C._("Copy of %(title)s", title=C.label(report)) if copy else C.label(report)),
        name="" if copy else report.name,
        groups=list(report.group_by),
        pivot=report.pivot or "",
        totals=report.totals,
        chart=report.chart.kind if report.chart else "",
        limit="" if report.limit == MAX_LIMIT else str(report.limit),
        published=report.owner is None and not copy,
        roles=list(report.roles),
    )
    if report.sort:
        draft.sort_key, draft.sort_dir = report.sort[0]
    for m in report.measures[:MEASURE_ROWS]:
        kind, _, rest = m.spec.partition(":")
        if kind == "count":
            draft.measures.append(MeasureRow("count"))
        elif kind == "distinct":
            draft.measures.append(MeasureRow("count_distinct", rest))
        elif kind == "weighted":
            product, _, divide = rest.partition("/")
            value, _, by = product.partition("*")
            draft.measures.append(MeasureRow("weighted", value, by, divide))
        else:
            draft.measures.append(MeasureRow(kind, rest))
    kept = {}
    for name, p in report.parameters.items():
        if p.type == "period" and not draft.period_field:
            draft.period_field, draft.period_default = p.field, str(p.default or "")
            kept[name] = True
        elif p.type == "user" and p.field == "owner":
            draft.owner_param = kept[name] = True
        elif p.type == "team" and p.field == "owner":
            draft.team_param = kept[name] = True
    raw = _without_params(thaw(report.filter)) if report.filter is not None else None
    shown = F.rows_of(raw)
    if shown is not None:
        draft.mode, draft.rows = shown
    else:
        draft.filter_json = json.dumps(raw, ensure_ascii=False)
    return draft


def _without_params(raw):
    """The filter without its parameter leaves (the builder adds its own back)."""
    if isinstance(raw, dict):
        if "param" in raw:
            return None
        for key in ("all", "any"):
            if key in raw:
                kept = [c for c in (_without_params(c) for c in raw[key]) if c is not None]
                if not kept:
                    return None
                if len(kept) == 1 and isinstance(kept[0], dict) and key == "all":
                    return kept[0]
                return {key: kept}
    return raw


# ------------------------------------------------------------------------ draft -> document
class DraftProblem(ValueError):
    """A control whose value cannot go into a document at all (a filter row)."""

    def __init__(self, control: str, message: str):
        super().__init__(message)
        self.control = control


def measure_name(row: MeasureRow, taken: set[str]) -> str:
    stem = {"count": "records", "count_distinct": "distinct"}.get(row.kind, row.kind)
    if row.kind != "count" and row.field:
        stem += "_" + re.sub(r"[^a-z0-9_]", "_", row.field.lower())
    name, n = stem[:50], 2
    while name in taken:
        name, n = f"{stem[:46]}_{n}", n + 1
    taken.add(name)
    return name


def measure_label(entity, row: MeasureRow) -> dict:
    en, ru = KIND_WORDS.get(row.kind, (row.kind, row.kind))
    if row.kind == "count":
        return {"en": en, "ru": ru}
    try:
        target, _ = resolve_path(entity, row.field, C.catalog().entity_of)
        names = (target.label.get("en"), target.label.get("ru"))
    except FilterError:
        names = (row.field, row.field)
    return {"en": f"{names[0]} ({en})", "ru": f"{names[1]} ({ru})"}


def measure_document(row: MeasureRow):
    if row.kind == "count":
        return {"count": True}
    if row.kind == "weighted":
        spec = {"sum": row.field, "by": row.by}
        if row.divide:
            try:
                spec["divide"] = float(row.divide) if "." in row.divide else int(row.divide)
            except ValueError:
                spec["divide"] = row.divide  # the schema names the mistake
        return {"weighted": spec}
    return {row.kind: row.field}


def document_of(draft: Draft, entity) -> tuple[dict, dict[str, str]]:
    """The report's definition (as in ``reports/*.yaml``) and, for each measure name,
    the control that made it."""
    spec: dict = {"entity": draft.entity}
    title = draft.title or C._("Untitled report")
    spec["label"] = {"en": title, "ru": title}
    conditions = []
    if draft.filter_json:
        try:
            conditions.append(json.loads(draft.filter_json))
        except ValueError as exc:
            raise DraftProblem(
                "filter", C._("The filter is not valid JSON: %(detail)s", detail=str(exc))
            ) from None
    else:
        raws = []
        for row in draft.rows:
            try:
                raws.append(F.row_condition(entity, C.catalog().entity_of, row, C.locale()))
            except FilterError as exc:
                raise DraftProblem(
                    "filter", f"{C.path_label(entity, row.path)}: {exc.message}"
                ) from None
        if raws:
            conditions.append({draft.mode: raws})
    parameters = {}
    if draft.period_field:
        parameters["period"] = {"type": "period", "field": draft.period_field}
        if draft.period_default and draft.period_default != "all":
            parameters["period"]["default"] = draft.period_default
    if draft.owner_param:
        parameters["owner"] = {"type": "user", "field": "owner"}
    if draft.team_param:
        parameters["team"] = {"type": "team", "field": "owner"}
    conditions += [{"param": name} for name in parameters]
    if conditions:
        spec["filter"] = conditions[0] if len(conditions) == 1 else {"all": conditions}
    groups = [g for g in draft.groups if g]
    if groups:
        spec["group_by"] = groups
    measures, controls, taken = {}, {}, set()
    for index, row in enumerate(draft.measures):
        if not row.kind:
            continue
        name = measure_name(row, taken)
        measures[name] = {**measure_document(row), "label": measure_label(entity, row)}
        controls[name] = f"measure-{index}"
    spec["measures"] = measures or {"records": {"count": True}}
    if draft.pivot:
        spec["pivot"] = draft.pivot
    if draft.totals:
        spec["totals"] = True
    if draft.sort_key:
        spec["sort"] = [[draft.sort_key, draft.sort_dir]]
    if draft.limit:
        spec["limit"] = int(draft.limit) if draft.limit.lstrip("-").isdigit() else draft.limit
    if parameters:
        spec["parameters"] = parameters
    if draft.chart:
        names = list(measures) or ["records"]
        # one scale per chart: counts drawn beside money would be flat lines, so a chart
        # draws the first measure, and KPI cards every one
        several = draft.chart == "kpi"
        spec["chart"] = {"kind": draft.chart, "measures": names if several else names[:1]}
    if draft.published and C.access().is_admin:
        if draft.roles:
            spec["roles"] = draft.roles
    else:
        spec["owner"] = C.principal().email or str(C.principal().user_id)
    return spec, controls


# ------------------------------------------------------------------------ names
def name_from(title: str) -> str:
    text = "".join(_CYRILLIC.get(ch, ch) for ch in title.lower())
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9]+", "_", text).strip("_")[:50] or "report"
    return stem if stem[0].isalpha() else f"report_{stem}"[:50]


def free_name(stem: str) -> str:
    taken = C.catalog().reports
    if stem not in taken:
        return stem
    return next(f"{stem[:44]}_{n}" for n in range(2, 100_000) if f"{stem[:44]}_{n}" not in taken)


# ------------------------------------------------------------------------ checking
@dataclass
class Checked:
    name: str
    spec: dict | None = None
    yaml: str = ""
    problems: dict[str, list[str]] = field(default_factory=dict)  # control -> messages
    report: Report | None = None

    def add(self, control: str, message: str) -> None:
        self.problems.setdefault(control, []).append(message)


#: A top-level key of the document -> the control that wrote it.
_KEY_CONTROLS = {
    "entity": "entity",
    "label": "title",
    "filter": "filter",
    "group_by": "group-0",
    "measures": "measure-0",
    "pivot": "pivot",
    "totals": "totals",
    "sort": "sort",
    "limit": "limit",
    "parameters": "param-period",
    "chart": "chart",
    "owner": "visibility",
    "roles": "roles",
}


def _anchors(spec, measure_controls: dict[str, str]) -> list[tuple[int, str]]:
    """(line, control) of every place of the read-back document a control wrote."""
    out = [(spec.position.line, "general")]
    for key in spec:
        out.append((spec.at(key).line, _KEY_CONTROLS.get(key, "general")))
        value = spec[key]
        if key == "group_by" and isinstance(value, list):
            out += [(value.at(i).line, f"group-{i}") for i in range(len(value))]
        elif key == "measures" and isinstance(value, dict):
            out += [(value.at(k).line, measure_controls.get(k, "measure-0")) for k in value]
        elif key == "parameters" and isinstance(value, dict):
            out += [(value.at(k).line, f"param-{k}") for k in value]
    return sorted(out)


def check(draft: Draft, editing: Report | None = None) -> Checked:
    """The draft as a document, checked as a pack's report is, and compiled."""
    catalog = C.catalog()
    entity = catalog.entity_of(draft.entity)
    if entity is None or not C.can(entity.name, "read"):
        checked = Checked("")
        checked.add("entity", C._("Choose the records to report on."))
        return checked
    name = (
        editing.name if editing is not None else (draft.name or free_name(name_from(draft.title)))
    )
    checked = Checked(name)
    if editing is None:
        if not _NAME.match(name):
            checked.add(
                "name",
                C._("A name has lowercase letters, digits and _ and starts with a letter."),
            )
        elif draft.name and name in catalog.reports:
            checked.add(
                "name",
                C._("The name %(name)s is taken by another report: choose another.", name=name),
            )
    try:
        spec, measure_controls = document_of(draft, entity)
    except DraftProblem as exc:
        checked.add(exc.control, str(exc))
        return checked
    checked.spec = spec
    checked.yaml = yaml.safe_dump(
        {"reports": {name if _NAME.match(name) else "report": spec}},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=None,
        width=100,
    )
    try:
        data = load_yaml(checked.yaml, DRAFT)
    except YamlSyntaxError as exc:  # pragma: no cover - safe_dump writes what it reads
        checked.add("general", str(exc))
        return checked
    problems = Problems()
    built = {}
    if _validate(data, "reports", DRAFT, problems):
        built = build_reports(
            problems, catalog.entities, [(LAYER, data)], LAYER, roles=catalog.roles
        )
    inner = next(iter(data["reports"].values()))
    anchors = _anchors(inner, measure_controls)
    for problem in problems.items:
        line = problem.position.line
        control = next((c for at, c in reversed(anchors) if at <= line), "general")
        checked.add(control, str(problem))
    report = next(iter(built.values()), None)
    if report is not None and not checked.problems:
        why = refusal(report)  # a field the user may not read: refused before it runs
        if why is None:
            checked.report = report
        else:
            checked.add("general", C._("You may not run this report: %(detail)s", detail=why))
    return checked


def preview_of(checked: Checked) -> dict:
    """The report page's body for a checked draft: its figures as the user, or why not."""
    if checked.report is None:
        return {"problem": C._("Fix the marked problems to see the figures.")}
    try:
        result = run_report(C.store(), checked.report, {}, C.principal())
    except ReportRefused as exc:
        return {"problem": C._("You may not run this report: %(detail)s", detail=str(exc))}
    except (ParameterError, ReportError) as exc:
        return {"problem": C._("The report cannot run: %(detail)s", detail=str(exc))}
    return {"view": ReportView(checked.report, result, {}), "report": checked.report}


# ------------------------------------------------------------------------ who may change what
def editable(report: Report) -> bool:
    """A report of the customization layer the user may change: their own personal one,
    or (administrators) one published to others.  Pack reports are copied instead."""
    if report.solution != LAYER or visible(report.name) is None:
        return False
    return report.owner is not None or C.access().is_admin


def _editable_or_404(name: str) -> Report:
    report = visible(name)
    if report is None or not editable(report):
        abort(404)
    return report


# ------------------------------------------------------------------------ the page
def choices(entity) -> dict:
    """What the controls offer for an entity, as the user may read it."""
    catalog = C.catalog()
    readable = C.readable_names(entity)
    groups, dates, numbers, ordered = [], [], [], []

    def add_group(path: str, text: str) -> None:
        try:
            found = parse_group(entity, catalog.entity_of, path)
        except FilterError:
            return
        kind = value_type(found.field)
        if kind in ("date", "datetime"):
            dates.append((path, text))
            groups.extend((f"{path}:{b}", f"{text}: {C._(b.capitalize())}") for b in BUCKETS)
        elif kind in GROUPABLE:
            groups.append((path, text))

    for name, f in entity.fields.items():
        if name not in readable:
            continue
        kind = value_type(f)
        add_group(name, C.label(f))
        if kind in SUMMABLE:
            numbers.append((name, C.label(f)))
        if kind in ORDERED:
            ordered.append((name, C.label(f)))
    for name in ("owner", "created_at", "updated_at"):
        add_group(name, C._(C.SYSTEM_LABELS[name]))
    for name, f in entity.fields.items():
        if f.type != "lookup" or name not in readable:
            continue
        target = catalog.entity_of(f.params["to"])
        if target is None or not C.can(target.name, "read"):
            continue
        inner_readable = C.readable_names(target)
        for inner, g in target.fields.items():
            if inner in inner_readable and value_type(g) in GROUPABLE - {"date", "datetime"}:
                try:
                    parse_group(entity, catalog.entity_of, f"{name}.{inner}")
                except FilterError:
                    continue
                groups.append((f"{name}.{inner}", f"{C.label(f)} › {C.label(g)}"))
    return {
        "groups": groups,
        "dates": dates,
        "numbers": numbers,
        "ordered": ordered,
        "distinct": [(p, t) for p, t in groups if ":" not in p],
    }


def _sort_options(checked: Checked, draft: Draft, entity) -> list[tuple[str, str]]:
    options = []
    if entity is None:
        return options
    labels = dict(choices(entity)["groups"])
    options += [(g, labels.get(g, g)) for g in draft.groups if g]
    if checked.spec:
        for name, spec in checked.spec["measures"].items():
            options.append((name, spec["label"]["ru" if C.locale() == "ru" else "en"]))
    if draft.sort_key and draft.sort_key not in dict(options):
        options.append((draft.sort_key, draft.sort_key))
    return options


def context_of(draft: Draft, checked: Checked | None, editing: Report | None) -> dict:
    catalog = C.catalog()
    entity = catalog.entity_of(draft.entity) if draft.entity else None
    entities = sorted(
        ((e.name, C.plural(e)) for e in catalog.entities.values() if C.can(e.name, "read")),
        key=lambda pair: pair[1].casefold(),
    )
    context = {
        "draft": draft,
        "editing": editing,
        "entities": entities,
        "entity": entity,
        "checked": checked,
        "problems": checked.problems if checked else {},
        "kinds": [(k, C._(KIND_LABELS[k])) for k in MEASURE_KINDS],
        "charts": [(k, C._(CHART_LABELS[k])) for k in CHART_KINDS],
        "periods": [(p, period_label(p)) for p in PERIODS],
        "roles": [(n, C.label(r)) for n, r in catalog.roles.items()],
        "is_admin": C.access().is_admin,
        "group_rows": GROUP_ROWS,
        "measure_rows": MEASURE_ROWS,
        "controls": CONTROLS,
    }
    if entity is not None:
        context.update(choices(entity))
        context["builder_fields"] = builder_fields(entity)
        context["builder_rows"] = [builder_row(entity, r) for r in draft.rows]
        context["view"] = SimpleNamespace(name=f"{entity.name}__all")  # the filter rows' list
        context["sort_options"] = _sort_options(checked or Checked(""), draft, entity)
        context["has_owner"] = True
    if checked is not None:
        context.update(preview_of(checked))
    return context


KIND_LABELS = {
    "count": "Count of records",
    "count_distinct": "Count of different values",
    "sum": "Sum",
    "avg": "Average",
    "min": "Minimum",
    "max": "Maximum",
    "weighted": "Weighted sum",
}
CHART_LABELS = {
    "bar": "Bar chart",
    "stacked_bar": "Stacked bars",
    "line": "Line chart",
    "pie": "Pie chart",
    "funnel": "Funnel",
    "kpi": "Big numbers (KPI)",
}
#: Every control that can carry a problem (the preview clears each one it does not mark).
CONTROLS = (
    "general",
    "title",
    "name",
    "entity",
    *(f"group-{i}" for i in range(GROUP_ROWS)),
    "pivot",
    *(f"measure-{i}" for i in range(MEASURE_ROWS)),
    "filter",
    "totals",
    "sort",
    "limit",
    "chart",
    *(f"param-{p}" for p in PARAMETER_NAMES),
    "visibility",
    "roles",
)


@bp.get("/reports/new")
def new():
    copy = request.args.get("copy")
    if copy:
        source = visible(copy)
        if source is None:
            abort(404)
        draft = draft_of_report(source, copy=True)
    else:
        draft = Draft(entity=request.args.get("entity", ""))
        draft.measures = [MeasureRow("count")]
    checked = check(draft) if draft.entity else None
    return render_template("ui/reports/builder.html", **context_of(draft, checked, None))


@bp.get("/reports/<name>/edit")
def edit(name: str):
    report = _editable_or_404(name)
    draft = draft_of_report(report)
    if request.args.get("entity"):  # another entity: start again on it
        draft = Draft(
            entity=request.args["entity"], title=draft.title, measures=[MeasureRow("count")]
        )
    return render_template(
        "ui/reports/builder.html", **context_of(draft, check(draft, report), report)
    )


def _editing_of_form() -> Report | None:
    name = request.form.get("editing", "")
    return _editable_or_404(name) if name else None


@bp.post("/reports/builder/preview")
def preview():
    """The draft checked and run: the preview and each control's problems (htmx swaps
    them out of band, so a fixed control loses its message)."""
    editing = _editing_of_form()
    draft = draft_of_form(request.form)
    checked = check(draft, editing)
    return render_template(
        "ui/reports/_builder_preview.html", **context_of(draft, checked, editing)
    )


@bp.post("/reports/builder/save")
def save():
    editing = _editing_of_form()
    draft = draft_of_form(request.form)
    checked = check(draft, editing)
    if checked.report is None:
        return _refused(draft, checked, editing)
    store = C.store()
    try:
        store.customize_all(
            [("reports", {"reports": {checked.name: checked.spec}})],
            user_id=C.principal().user_id,
            replacing=[("reports", checked.name)] if editing is not None else (),
        )
    except DefinitionError as exc:  # the whole catalog refused it (a clash since the check)
        for problem in exc.problems:
            checked.add("general", problem.message)
        return _refused(draft, checked, editing)
    flash(C._("The report is saved."), "success")
    return redirect(url_for("ui_reports.page", name=checked.name), code=303)


def _refused(draft: Draft, checked: Checked, editing: Report | None):
    context = context_of(draft, checked, editing)
    return render_template("ui/reports/builder.html", **context), 422


@bp.post("/reports/<name>/delete")
def delete(name: str):
    _editable_or_404(name)
    try:
        C.store().uncustomize("reports", name)
    except DefinitionError:  # a dashboard shows it: the catalog without it would not build
        flash(C._("The report is on a dashboard: remove it from the dashboard first."), "danger")
        return redirect(url_for("ui_reports.page", name=name), code=303)
    flash(C._("The report is deleted."), "success")
    return redirect(url_for("ui_reports.index"), code=303)


__all__ = ["bp", "check", "draft_of_form", "draft_of_report", "name_from"]

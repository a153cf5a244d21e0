"""A record as a printable document (``GET /r/<entity>/<id>/print``).

An entity whose pack declares a print form (``print: true`` in its forms) gets a Print
button on its record page.  The page is the print form's sections on one sheet: the
organization's name at the top, the document's kind, title and fields formatted in the
reader's locale (money in the organization's currency; a field left empty is not
printed, and a section of numbers only, such as the totals, is set to the right as
figures), and for each ``related`` section
of a children field a table of the child records.  The table's columns are the child
entity's own print form's fields, in order (a quote line's product, quantity, price...),
else its main list view's columns.  Print CSS lays it out on A4 without the application's
chrome, so the browser's print dialog prints or saves it as PDF.

Everything is read through the records service as the reader: a record they may not read
is refused as on its record page, fields hidden from them are left out (and columns of
child rows too), and so are sections and fields whose ``visible_if`` is false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Blueprint, abort, render_template
from markupsafe import Markup

from ...metadata import Entity
from ...metadata.evaluate import matches, record_getter
from ...metadata.model import Form, FormField
from . import context as C
from . import widgets as W
from .forms import entity_or_404
from .guards import guard
from .layouts import main_view
from .record_view import shown_value

bp = guard(Blueprint("ui_print", __name__))

#: The most child rows one printed table lists (a document longer than this is not a
#: document to print); the page says when rows were left out.
MAX_ROWS = 1000
#: Rows fetched per query while reading them.
_PAGE = 200
#: Long texts print as a block under their label (terms, notes), not beside it.
BLOCKS = frozenset(("long_text", "rich_text"))
#: Number types: a section of only these (a document's totals) is set as figures, to the
#: right and aligned on their last digit.
FIGURES = frozenset(("money", "decimal", "integer", "float", "percent"))


@dataclass
class PrintedField:
    label: str
    shown: Markup
    type: str

    @property
    def block(self) -> bool:
        return self.type in BLOCKS


@dataclass
class PrintedTable:
    label: str
    headers: list[tuple[str, str]]  # (label, field type): numbers are right-aligned
    rows: list[list[Markup]]
    more: bool  # rows were left out (over MAX_ROWS)


def printed_field(entity: Entity, item: FormField, record: Mapping) -> PrintedField:
    f = entity.fields[item.field]
    return PrintedField(
        label=C.label(item.label) if item.label else C.label(f),
        shown=shown_value(entity, item.field, record),
        type=f.type,
    )


def print_form(entity: Entity) -> Form | None:
    return C.catalog().print_form_of(entity.name)


def _visible(condition, getter, ctx) -> bool:
    return condition is None or matches(condition, getter, ctx)


def printed_sections(entity: Entity, form: Form, record: Mapping) -> list[dict]:
    """The print form's sections the reader sees, in order, tabs run together."""
    readable = C.readable_names(entity)
    getter = record_getter(dict(record))
    ctx = W.filter_context()
    out = []
    for tab in form.tabs:
        for section in tab.sections:
            if not _visible(section.visible_if, getter, ctx):
                continue
            label = C.label(section.label) if section.label else ""
            if section.related is not None:
                table = child_table(entity, section.related, record)
                if table is not None:
                    out.append({"label": label or table.label, "table": table})
                continue
            columns = []
            for column in section.columns:
                fields = [
                    printed_field(entity, item, record)
                    for item in column
                    if item.field in readable and _visible(item.visible_if, getter, ctx)
                ]
                fields = [f for f in fields if f.shown]  # an empty field is left off paper
                if fields:
                    columns.append(fields)
            if columns:
                figures = all(f.type in FIGURES for c in columns for f in c)
                out.append({"label": label, "columns": columns, "figures": figures})
    return out


def _child_columns(target: Entity, via: str | None) -> list[str]:
    """The columns of a child's rows: its print form's fields, else its main view's;
    never the lookup to the parent (every row would repeat the document)."""
    form = C.catalog().print_form_of(target.name)
    if form is not None:
        names = [item.field for item in form.fields()]
    else:
        names = list(main_view(C.catalog(), target).columns)
    readable = C.readable_names(target)
    return [
        n
        for n in names
        if n != via and n.split(".")[0] in readable and C.field_at(target, n).stored
    ]


def child_table(entity: Entity, field_name: str, record: Mapping) -> PrintedTable | None:
    """A children (or many-to-many) field's records as a table, or None when the reader
    may not read them (the field or the other entity)."""
    f = entity.fields.get(field_name)
    if (
        f is None
        or f.type not in ("children", "many_to_many")
        or field_name not in C.readable_names(entity)
    ):
        return None
    target = C.catalog().entity_of(f.target)
    if target is None or not C.can(target.name, "read"):
        return None
    via = f.params.get("via") if f.type == "children" else None
    columns = _child_columns(target, via)
    if not columns:
        return None
    if f.type == "children":
        flt = [via, "eq", record["id"]]
    else:
        ids = list(record.get(field_name) or ())
        flt = ["id", "in", ids] if ids else ["id", "eq", 0]  # none linked: no rows
    service = C.records(target)
    rows, after = [], None
    while len(rows) < MAX_ROWS:
        page = service.query(
            filter=flt,
            sort=[["id", "asc"]],  # the order the lines were added in
            fields=columns,
            limit=min(_PAGE, MAX_ROWS - len(rows)),
            after=after,
        )
        rows.extend(page.rows)
        after = page.next_cursor
        if not after:
            break
    titles = C.titles()
    titles.want_records(target, rows, columns)
    titles.resolve()
    fields = [C.field_at(target, c) for c in columns]
    return PrintedTable(
        label=C.label(f),
        headers=[(C.path_label(target, c), cf.type) for c, cf in zip(columns, fields)],
        rows=[
            [C.display(cf, r.get(c), link=False) for c, cf in zip(columns, fields)] for r in rows
        ],
        more=bool(after),
    )


@bp.get("/r/<entity_name>/<recid:record_id>/print")
def document(entity_name: str, record_id: int):
    entity = entity_or_404(entity_name)
    form = print_form(entity)
    if form is None:
        abort(404)
    record = C.records(entity).get(record_id)  # refused as the record page is
    return render_template(
        "ui/print.html",
        entity=entity,
        record=record,
        kind=C.label(form.label) or C.label(entity),
        title=C.record_title(entity, record),
        organization=C.settings().get("organization") or "",
        sections=printed_sections(entity, form, record),
    )

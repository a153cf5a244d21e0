"""The Import page of an entity: upload a CSV or XLSX file, match its columns to fields
(prefilled by name or label), see a preview of the first rows as they would go in (parsed
values, the records service's messages, duplicates found), then run the import with a
progress bar and download the rejected rows.

The uploaded file is kept in the file store as the user's own upload, so every step (and
every web worker) reads the same bytes and nobody else can use it.  The run streams its
progress as lines of JSON to the page's script (``static/js/import.js``); the import itself
runs in a thread beside the response, and a page closed halfway cancels it, which rolls
back what was not committed (a partial import keeps its committed chunks, and the page
offers to continue it after them, as ``xrm import --resume``).  The work is
``xrm/data/imports.py``: no rule lives here.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import tempfile
import threading

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from ...data.imports import (
    MODES,
    NOT_IMPORTABLE,
    ImportCancelled,
    Importer,
    ImportRefused,
    rejects_csv,
)
from ...data.sources import SourceError, open_source
from ...metadata import Entity
from ...storage.files import get_file, put_file, uploads_of
from ...storage.records import Forbidden
from . import context as C
from .guards import guard, htmx

bp = guard(Blueprint("ui_imports", __name__))

ENCODINGS = ("utf-8", "utf-8-sig", "cp1251", "cp1252", "latin-1", "koi8-r", "utf-16")
DELIMITERS = ((",", ","), (";", ";"), ("tab", "Tab"), ("|", "|"))
WEB_CHUNK = 500  # rows per chunk in the browser: progress moves often enough to see
PROGRESS_EVERY = 0.25  # seconds between progress lines at most


def _entity(entity_name: str) -> Entity:
    entity = C.catalog().entity_of(entity_name)
    if entity is None:
        abort(404)
    if not (C.can(entity.name, "create") or C.can(entity.name, "update")):
        raise Forbidden(f"you may not import {entity.name} records")
    return entity


@bp.get("/e/<entity_name>/import")
def upload_page(entity_name: str):
    entity = _entity(entity_name)
    return render_template("ui/import.html", entity=entity, step="upload", error=None)


@bp.post("/e/<entity_name>/import")
def upload(entity_name: str):
    entity = _entity(entity_name)
    request.max_content_length = current_app.config.get("XRM_IMPORT_MAX_BYTES", 64 << 20)
    sent = request.files.get("file")
    if sent is None or not sent.filename:
        error = C._("Choose a CSV or Excel file.")
        return render_template("ui/import.html", entity=entity, step="upload", error=error), 422
    data = sent.read()
    stored = put_file(C.store(), data, sent.filename, sent.mimetype, C.principal().user_id)
    return redirect(url_for("ui_imports.mapping", entity_name=entity.name, key=stored["key"]), 303)


class _Upload:
    """The user's uploaded file as a path on disk for the length of a request."""

    def __init__(self, key: str):
        user = C.principal().user_id
        if not uploads_of(C.store(), user, [key]):
            abort(404)  # another user's upload is as unknown as a missing one
        row = get_file(C.store(), key)
        if row is None:
            abort(404)
        self.key, self.name = key, row.name
        suffix = os.path.splitext(row.name)[1]
        with tempfile.NamedTemporaryFile(delete=False, suffix=suffix) as handle:
            handle.write(row.data)
        self.path = handle.name

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _options() -> dict:
    """The choices of the mapping form (query string or posted)."""
    values = request.values
    mapping = {}
    for name, value in values.items():
        if name.startswith("col-"):
            mapping[name[4:]] = value
    return {
        "mode": values.get("mode") or "create",
        "key": values.get("key") or None,
        "dedupe": [v for v in values.getlist("dedupe") if v],
        "partial": values.get("partial") == "1",
        # an earlier partial run of the same file and plan that stopped: go on after its
        # last committed row, or start over (the command's --resume / --restart)
        "stopped": values.get("stopped")
        if values.get("stopped") in ("resume", "restart")
        else None,
        "encoding": values.get("encoding") or None,
        "delimiter": values.get("delimiter") or None,
        "mapping": mapping,
    }


def _importer(entity: Entity, upload: _Upload, options: dict) -> Importer:
    source = open_source(
        upload.path,
        encoding=options["encoding"],
        delimiter=options["delimiter"],
        name=upload.name,
    )
    # the form names columns by their position: headers may repeat blanks or odd spacing
    mapping = {}
    for index, header in enumerate(source.headers):
        if str(index) in options["mapping"] and header:
            mapping[header] = options["mapping"][str(index)]
    return Importer(
        C.store(),
        entity.name,
        source,
        principal=C.principal(),
        mapping=mapping,
        mode=options["mode"] if options["mode"] in MODES else "create",
        key=options["key"],
        dedupe=options["dedupe"],
        partial=options["partial"],
        chunk_size=WEB_CHUNK,
        locale=C.locale(),
        tz=C.tz(),
    )


def field_choices(entity: Entity) -> list[tuple[str, str]]:
    """(path, label) of what a column may fill: the fields this user may write, a lookup
    by its target's title or by id, the owner."""
    writable = C.writable_names(entity)
    out = [("id", "ID")]
    for name, f in entity.fields.items():
        if name not in writable or f.type in NOT_IMPORTABLE:
            continue
        label = C.label(f)
        if f.type == "lookup":
            target = C.catalog().entity(f.target)
            title = target.fields.get(target.title or "")
            if title is not None and title.stored:
                out.append((name, f"{label} ({C._('by %(what)s', what=C.label(title))})"))
            out.append((f"{name}.id", f"{label} (ID)"))
            continue
        out.append((name, label))
    if C.scope(entity.name, "create") != "none":
        out.append(("owner", C._("Owner")))
    return out


def _page(entity: Entity, upload: _Upload, options: dict, status: int = 200):
    error = None
    importer = preview = stopped = None
    try:
        importer = _importer(entity, upload, options)
        preview = importer.preview()
        stopped = importer.resume_point()
    except SourceError as exc:
        error = C.error(str(exc))
    except ImportRefused as exc:
        error = "; ".join(C.error(p) for p in exc.problems)
    context = {
        "entity": entity,
        "step": "map",
        "upload": upload,
        "options": options,
        "importer": importer,
        "preview": preview,
        "stopped": stopped,
        "error": error,
        "choices": field_choices(entity),
        "rules": [(r.name, r.title(C.locale())) for r in entity.duplicates],
        "rule_titles": {r.name: r.title(C.locale()) for r in entity.duplicates},
        "modes": MODES,
        "encodings": ENCODINGS,
        "delimiters": DELIMITERS,
        "key_fields": [
            ("id", "ID"),
            *((n, C.label(f)) for n, f in entity.fields.items() if f.stored and not f.computed),
        ],
    }
    template = "ui/_import_preview.html" if htmx() else "ui/import.html"
    return render_template(template, **context), status


@bp.get("/e/<entity_name>/import/<key>")
def mapping(entity_name: str, key: str):
    entity = _entity(entity_name)
    upload = _Upload(key)
    try:
        return _page(entity, upload, _options())
    finally:
        upload.close()


@bp.post("/e/<entity_name>/import/<key>/preview")
def preview(entity_name: str, key: str):
    entity = _entity(entity_name)
    upload = _Upload(key)
    try:
        return _page(entity, upload, _options())
    finally:
        upload.close()


@bp.post("/e/<entity_name>/import/<key>/run")
def run(entity_name: str, key: str):
    entity = _entity(entity_name)
    upload = _Upload(key)
    options = _options()
    try:
        importer = _importer(entity, upload, options)
        importer.check()
    except (SourceError, ImportRefused):
        try:
            return _page(entity, upload, options, 422)
        finally:
            upload.close()
    choice = {"resume": options["stopped"] == "resume", "restart": options["stopped"] == "restart"}
    if "application/x-ndjson" not in request.headers.get("Accept", ""):
        try:  # without the page's script: run, then show the outcome
            result = importer.run(**choice)
        except ImportRefused:  # a stopped import neither continued nor started over
            return _page(entity, upload, options, 422)
        finally:
            upload.close()
        return render_template("ui/import.html", step="done", **_outcome(entity, upload, result))
    return Response(
        stream_with_context(_stream(entity, upload, importer, choice)),
        mimetype="application/x-ndjson",
    )


def _stream(entity: Entity, upload: _Upload, importer: Importer, choice: dict):
    """Progress lines while the import runs in a thread; the outcome's HTML last.  A
    closed page stops the generator, which cancels the import (nothing half-done)."""
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    last = [0.0]

    def progress(p) -> None:
        if cancelled.is_set():
            raise ImportCancelled
        import time

        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            events.put(("progress", p))

    def work() -> None:
        try:
            events.put(("done", importer.run(progress=progress, **choice)))
        except ImportCancelled:
            events.put(("cancelled", None))
        except ImportRefused as exc:
            events.put(("refused", exc))
        except Exception as exc:  # shown on the page, logged by the caller
            events.put(("failed", exc))

    worker = threading.Thread(target=work, name="xrm-import", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "progress":
                yield _line(
                    {
                        "rows": value.rows,
                        "total": value.total,
                        "created": value.created,
                        "updated": value.updated,
                        "skipped": value.skipped,
                        "rejected": value.rejected,
                    }
                )
                continue
            if kind == "done":
                html = render_template("ui/_import_done.html", **_outcome(entity, upload, value))
                yield _line({"done": True, "html": html})
            elif kind == "refused":
                yield _line({"done": True, "error": "; ".join(C.error(p) for p in value.problems)})
            elif kind == "failed":
                current_app.logger.error("import into %s failed", entity.name, exc_info=value)
                yield _line({"done": True, "error": C._("The import failed; nothing was written.")})
            return
    finally:
        cancelled.set()
        worker.join()
        upload.close()


def _line(data: dict) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")


def _outcome(entity: Entity, upload: _Upload, result) -> dict:
    rejects_url = None
    if result.rejects:
        base = os.path.splitext(upload.name)[0] or entity.name
        stored = put_file(
            C.store(),
            rejects_csv(result.rejects),
            f"{base}-rejected.csv",
            "text/csv",
            C.principal().user_id,
        )
        rejects_url = url_for("ui_shell.download", key=stored["key"])
    return {
        "entity": entity,
        "result": result,
        "rejects_url": rejects_url,
        "list_url": url_for("ui_lists.entity_list", entity_name=entity.name),
    }

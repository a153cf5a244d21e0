"""Public web forms (web-to-lead): ``/f/<name>`` for visitors who are not signed in.

``GET /f/<name>`` is a standalone page (no application chrome, the visitor's language from
``Accept-Language`` or ``?lang=``) or, asked for JSON, the form's fields and a token for a
site that posts by script.  ``POST /f/<name>`` (a form, or JSON) creates one record
through the records service as the form's ``submit_as`` user, so that user's
permissions, the entity's validations and the entity's processes apply as to any create.
``GET /f/<name>/embed.js`` is a small script that puts the page in an iframe.

There is no session here, so no session CSRF token: the blueprint is exempt from the CSRF
guard, and a signed, timestamped form token made when the page was served is what a post
must carry instead.  Spam is kept out by, in order: the ``Origin`` (a browser posting
from a site that is neither ours nor in ``allowed_origins`` is refused), a rate limit per
client address (the application's limiter: Redis when ``XRM_REDIS_URL`` is set), the
token (refused when forged, for another form, sent less than ``XRM_WEB_FORM_MIN_SECONDS``
after the page was served, or older than ``XRM_WEB_FORM_MAX_AGE``), a honeypot field
(filled: answered like a success and nothing is written) and an optional captcha
verifier (``xrm.metadata.web_forms.captchas``).  Every outcome is counted per form in
``xrm_counter`` for the administration page.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeSerializer
from limits import RateLimitItemPerSecond
from sqlalchemy.dialects import postgresql, sqlite

from ..metadata.web_forms import WebForm, captchas
from ..storage import form_links
from ..storage import tables as T
from ..storage.records import ALL_KEY, Forbidden, NotFound, Records, ValidationFailed
from ..storage.security import Access
from . import current_store
from .auth import client_address
from .headers import PAGE_POLICY, csp_nonce
from .ui.i18n import LANGUAGES, translate, translate_error

bp = Blueprint("public_forms", __name__, url_prefix="/f")
log = logging.getLogger(__name__)

SALT = "xrm.web-form"
TOKEN = "_token"  # the signed form token's input
HONEYPOT = "_website"  # left empty by people, filled by bots that fill every field
RECORD = "_record"  # a record: link form's signed record, carried from the page to the post
PLATFORM_INPUTS = (TOKEN, HONEYPOT, RECORD)
#: What each outcome of a post is counted as.
OUTCOMES = ("accepted", "invalid", "spam", "limited")
DEFAULTS = {
    "XRM_WEB_FORM_MIN_SECONDS": 3,  # a person takes longer than this to fill a form
    "XRM_WEB_FORM_MAX_AGE": 86400,  # seconds a served form can be sent
}
INPUT_TYPES = {
    "email": "email",
    "phone": "tel",
    "url": "url",
    "date": "date",
    "integer": "text",
    "decimal": "text",
    "money": "text",
    "percent": "text",
}
NUMERIC = ("integer", "decimal", "money", "percent")


class Refused(Exception):
    """A post that is answered with a message and writes nothing."""

    def __init__(self, status: int, message: str, outcome: str, headers=None):
        super().__init__(message)
        self.status, self.message, self.outcome, self.headers = status, message, outcome, headers


class NotSetUp(Exception):
    """The form cannot take submissions as configured: a message for the administrator."""


# ------------------------------------------------------------------------ helpers
def _(text: str, **values) -> str:
    return translate(text, g.ui_locale, **values)


def wants_json() -> bool:
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def form_or_404(name: str) -> WebForm:
    form = g.catalog.web_forms.get(name)
    if form is None or not form.enabled:
        abort(404)
    return form


def form_token(secret: str, name: str, issued) -> str:
    """The signed token of a form served at ``issued`` (an aware datetime)."""
    return URLSafeSerializer(secret, salt=SALT).dumps({"f": name, "t": int(issued.timestamp())})


def check_token(form: WebForm, token: str | None) -> None:
    """Raise Refused unless the token is this form's, old enough and not too old."""
    try:
        if not isinstance(token, str):  # missing, or sent twice, or not text in JSON
            raise BadSignature("no token")
        payload = URLSafeSerializer(current_app.secret_key, salt=SALT).loads(token)
        issued, name = int(payload["t"]), payload["f"]
    except (BadSignature, KeyError, TypeError, ValueError):
        raise Refused(
            400, _("The form could not be verified. Please send it again."), "spam"
        ) from None
    if name != form.name:
        raise Refused(400, _("The form could not be verified. Please send it again."), "spam")
    age = current_store().clock.now().timestamp() - issued
    if age < float(current_app.config["XRM_WEB_FORM_MIN_SECONDS"]):
        raise Refused(
            400, _("The form was sent too quickly. Please check it and send it again."), "spam"
        )
    if age > float(current_app.config["XRM_WEB_FORM_MAX_AGE"]):
        raise Refused(400, _("The form had expired. Please send it again."), "spam")


def count(form: WebForm, outcome: str, connection=None) -> None:
    """One more ``outcome`` for the form (in the caller's transaction when given)."""
    key = f"web_form:{form.name}:{outcome}"[:200]

    def run(conn):
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
            T.counters
        )
        conn.execute(
            insert.values(key=key, value=1).on_conflict_do_update(
                index_elements=["key"], set_={"value": T.counters.c.value + 1}
            )
        )

    if connection is not None:
        run(connection)
        return
    from ..storage.database import WRITE

    with current_store().engine.connect().execution_options(**WRITE) as conn, conn.begin():
        run(conn)


def counts(store) -> dict[str, dict[str, int]]:
    """Form name -> outcome -> how many, for every form that had a post."""
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(T.counters.c.key, T.counters.c.value).where(
                T.counters.c.key.like("web\\_form:%", escape="\\")
            )
        )
        for key, value in rows:
            _, name, outcome = key.split(":", 2)
            out.setdefault(name, {})[outcome] = int(value)
    return out


def setup_problem(store, catalog, form: WebForm) -> str | None:
    """Why the form cannot take submissions as configured (for the administrator), or None."""
    row = store.user_by_email(form.submit_as)
    if row is None:
        return f"submit_as: there is no user {form.submit_as}; create one or name another"
    if not row.active:
        return f"submit_as: the user {form.submit_as} is not active"
    principal = store.principal(row.id)
    if principal is None:
        return f"submit_as: the user {form.submit_as} is not active"
    access = catalog.artifact(("access", principal), lambda: Access(catalog, principal))
    action = "update" if form.record_link else "create"
    if access.scope_of(form.entity, action) == "none":
        return f"submit_as: {form.submit_as} may not {action} {form.entity} records (give them a role that may)"
    entity = catalog.entity(form.entity)
    locked = (access.read_only(entity) | access.hidden(entity)) & (
        {f.name for f in form.fields} | set(form.values)
    )
    if locked:
        return f"submit_as: {form.submit_as} may not set {', '.join(sorted(locked))}"
    if form.captcha and captchas.get(form.captcha) is None:
        return f"captcha: no captcha verifier {form.captcha!r} is registered"
    return None


def _setup_or_raise(form: WebForm):
    store = current_store()
    problem = setup_problem(store, g.catalog, form)
    if problem:
        raise NotSetUp(problem)
    return store.principal(store.user_by_email(form.submit_as).id)


# ------------------------------------------------------------------------ fields
def field_views(form: WebForm, posted: Mapping | None, errors: Mapping) -> list[dict]:
    """What the template shows for each field, in the visitor's language."""
    entity = g.catalog.entity(form.entity)
    locale = g.ui_locale
    out = []
    for item in form.fields:
        f = entity.fields[item.name]
        raw = (posted or {}).get(item.name)
        view = {
            "name": item.name,
            "type": f.type,
            "input": INPUT_TYPES.get(f.type, "text"),
            "numeric": f.type in NUMERIC,
            "label": (item.label or f.label).get(locale),
            "required": item.required,
            "placeholder": item.placeholder.get(locale) if item.placeholder else "",
            "help": (item.help or f.help).get(locale) if (item.help or f.help) else "",
            "errors": [translate_error(m, locale) for m in errors.get(item.name, ())],
            "value": raw if isinstance(raw, str) else "",
            "chosen": set(raw) if isinstance(raw, list) else {raw} if raw else set(),
            "max_length": f.params.get("max_length"),
            "options": [(o.value, o.label.get(locale)) for o in f.choices] or _rating_options(f),
        }
        view["described"] = " ".join(
            ref
            for ref, shown in ((f"h-{item.name}", view["help"]), (f"e-{item.name}", view["errors"]))
            if shown
        )
        if f.type == "boolean":
            view["checked"] = raw not in (None, "", False, "0", "false", "off")
        out.append(view)
    return out


def _rating_options(f) -> list[tuple[str, str]]:
    """A rating offered as its stars, best first: 5, 4, ... 1."""
    if f.type != "rating":
        return []
    top = int(f.params.get("max") or 5)
    return [(str(n), "★" * n) for n in range(top, 0, -1)]


def linked_record(form: WebForm, token) -> form_links.Signed:
    """The record a ``record: link`` form's link names; Refused when the link is not one of
    this form's, or too old."""
    store = current_store()
    with store.engine.connect() as conn:
        key = form_links.secret(conn)
        conn.commit()
    signed = form_links.read(key, token)
    if signed is None or signed.form != form.name or signed.entity != form.entity:
        raise Refused(
            404, _("This link is not valid. Please use the link from your email."), "spam"
        )
    age = (store.clock.now() - signed.issued).total_seconds()
    if age > form.link_max_age:
        raise Refused(410, _("This link has expired."), "spam")
    return signed


def read_posted() -> dict[str, Any]:
    """The post as name -> text (a list for multi-choice), JSON or form-encoded."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise Refused(400, _("Send a JSON object of field values."), "invalid")
        return data
    out: dict[str, Any] = {}
    for name in request.form:
        values = request.form.getlist(name)
        out[name] = values if len(values) > 1 else values[0]
    return out


def form_values(form: WebForm, posted: Mapping) -> tuple[dict, dict]:
    """The values to create from the post (only the form's fields), and field errors."""
    entity = g.catalog.entity(form.entity)
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for item in form.fields:
        f = entity.fields[item.name]
        raw = posted.get(item.name)
        if f.type == "multi_choice":
            value = [str(v) for v in (raw if isinstance(raw, list) else [raw] if raw else [])]
            value = [v for v in value if v.strip()] or None
        elif f.type == "boolean":
            value = raw if isinstance(raw, bool) else raw not in (None, "", "0", "false", "off")
        elif raw is None or isinstance(raw, str):
            value = raw.strip() if raw and raw.strip() else None
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool) and f.type in NUMERIC:
            value = raw
        else:
            errors.setdefault(item.name, []).append("expected text")
            continue
        if item.required and value in (None, [], False):
            errors.setdefault(item.name, []).append("required")
            continue
        if value is not None:
            values[item.name] = value
    return values, errors


def _records(store, principal, entity_name: str) -> Records:
    """The records service as ``submit_as``, reading the visitor's numbers and dates in
    the visitor's language."""
    catalog = g.catalog
    access = catalog.artifact(("access", principal), lambda: Access(catalog, principal))
    return Records(
        store,
        catalog,
        catalog.entity(entity_name),
        principal.user_id,
        tz=principal.tz,
        locale=g.ui_locale,
        access=access,
    )


# ------------------------------------------------------------------------ answers
def _cors(response, form: WebForm):
    origin = request.headers.get("Origin")
    if origin and origin in form.allowed_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
    response.vary.add("Origin")
    return response


def _policy(form: WebForm) -> str:
    """The page's Content-Security-Policy: framed by this site and the allowed origins,
    posting to this site (and redirected to the success address)."""
    ancestors = " ".join(("'self'", *form.allowed_origins))
    actions = "'self'"
    if form.success_redirect:
        parts = urlsplit(form.success_redirect)
        actions += f" {parts.scheme}://{parts.netloc}"
    return (
        PAGE_POLICY.format(nonce=csp_nonce())
        .replace("frame-ancestors 'none'", f"frame-ancestors {ancestors}")
        .replace("form-action 'self'", f"form-action {actions}")
    )


def _page(form: WebForm, template: str, status: int = 200, **context):
    g.public_form_framed = True
    body = render_template(
        f"public/{template}",
        form=form,
        lang=g.ui_locale,
        title=form.title.get(g.ui_locale),
        embed=request.values.get("embed") == "1",
        **context,
    )
    response = current_app.make_response((body, status))
    response.headers["Content-Security-Policy"] = _policy(form)
    return _cors(response, form)


def render_form(form: WebForm, posted=None, errors=None, general=(), status=200, record=""):
    errors = errors or {}
    verifier = captchas.get(form.captcha) if form.captcha else None
    widget = getattr(verifier, "widget", None)
    return _page(
        form,
        "form.html",
        status,
        fields=field_views(form, posted, errors),
        general=list(general),
        token=form_token(current_app.secret_key, form.name, current_store().clock.now()),
        honeypot=HONEYPOT,
        token_name=TOKEN,
        intro=form.intro.get(g.ui_locale) if form.intro else "",
        submit=form.submit.get(g.ui_locale) if form.submit else _("Send"),
        captcha=widget(g.ui_locale) if callable(widget) else "",
        captcha_errors=errors.get("_captcha", ()),
        record=record,
        record_name=RECORD,
        # the answer to the post comes in the same language and frame as the page
        action=url_for(
            ".page",
            name=form.name,
            embed="1" if request.values.get("embed") else None,
            lang=g.ui_locale if request.args.get("lang") else None,
        ),
    )


def _success_message(form: WebForm) -> str:
    if form.success_message:
        return form.success_message.get(g.ui_locale)
    return _("Thank you! Your submission has been received.")


def _success(form: WebForm):
    if wants_json():
        body = {"status": "received", "message": _success_message(form)}
        if form.success_redirect:
            body["redirect"] = form.success_redirect
        return _cors(current_app.make_response((jsonify(body), 201)), form)
    if form.success_redirect:
        return _cors(redirect(form.success_redirect, code=303), form)
    return _page(form, "done.html", 200, message=_success_message(form))


def _refused(form: WebForm, exc: Refused, posted):
    if wants_json():
        body = {"status": "refused", "message": exc.message}
        response = current_app.make_response((jsonify(body), exc.status, exc.headers or {}))
        return _cors(response, form)
    if exc.status in (404, 410):  # a bad link: no form to fill in again
        response = _page(form, "unavailable.html", exc.status, message=exc.message, detail="")
        return response
    record = posted.get(RECORD, "") if isinstance(posted.get(RECORD), str) else ""
    response = render_form(form, posted, general=[exc.message], status=exc.status, record=record)
    response.headers.update(exc.headers or {})
    return response


def _not_set_up(form: WebForm, problem: str):
    log.warning("web form %s cannot take submissions: %s", form.name, problem)
    message = _("This form cannot take submissions right now. Please try again later.")
    # the administrator who opens the page sees why; a visitor does not
    detail = problem if current_user.is_authenticated and _is_admin() else ""
    if wants_json():
        return _cors(
            current_app.make_response(
                (jsonify({"status": "unavailable", "message": message}), 503)
            ),
            form,
        )
    return _page(form, "unavailable.html", 503, message=message, detail=detail)


def _is_admin() -> bool:
    principal = current_store().principal(current_user.id)
    return bool(principal and principal.is_admin)


# ------------------------------------------------------------------------ routes
@bp.before_request
def _visitor_language():
    wanted = request.args.get("lang", "")[:2].lower()
    g.ui_locale = (
        wanted
        if wanted in LANGUAGES
        else request.accept_languages.best_match(list(LANGUAGES), default="en")
    )


@bp.route("/<name>", methods=["GET", "POST", "OPTIONS"])
def page(name: str):
    form = form_or_404(name)
    if request.method == "OPTIONS":
        return preflight(form)
    try:
        _setup_or_raise(form)
    except NotSetUp as exc:
        return _not_set_up(form, str(exc))
    if request.method == "GET":
        record = ""
        if form.record_link:
            record = request.args.get(form_links.PARAMETER, "")
            try:
                linked_record(form, record)
            except Refused as exc:
                return _refused(form, exc, {})
        if wants_json():
            return _cors(
                jsonify({**describe(form), **({"record": record} if record else {})}), form
            )
        return render_form(form, record=record)
    return submit(form)


def describe(form: WebForm) -> dict:
    """A form for a site that posts by script: its fields and a token to send back."""
    return {
        "name": form.name,
        "title": form.title.get(g.ui_locale),
        "token": form_token(current_app.secret_key, form.name, current_store().clock.now()),
        "token_field": TOKEN,
        "honeypot_field": HONEYPOT,
        "fields": [
            {
                "name": view["name"],
                "type": view["type"],
                "label": view["label"],
                "required": view["required"],
                **({"options": [v for v, _label in view["options"]]} if view["options"] else {}),
            }
            for view in field_views(form, None, {})
        ],
        "post": url_for(".page", name=form.name, _external=True),
    }


def preflight(form: WebForm):
    origin = request.headers.get("Origin")
    if not origin or origin not in form.allowed_origins:
        return current_app.make_response(("", 403))
    response = current_app.make_response(("", 204))
    response.headers["Access-Control-Allow-Methods"] = "GET, POST"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
    response.headers["Access-Control-Max-Age"] = "600"
    return _cors(response, form)


def submit(form: WebForm):
    store = current_store()
    posted: dict = {}
    try:
        origin = request.headers.get("Origin")
        if origin and origin != request.host_url.rstrip("/") and origin not in form.allowed_origins:
            raise Refused(403, _("This form does not take posts from that site."), "spam")
        limit_rate(form)
        posted = read_posted()
        check_token(form, posted.get(TOKEN))
        if str(posted.get(HONEYPOT) or "").strip():
            count(form, "spam")
            return _success(form)  # a bot learns nothing
        if wants_json() and request.is_json:
            extra = sorted(
                k
                for k in posted
                if k not in PLATFORM_INPUTS and form.field(k) is None and not k.startswith("_")
            )
            if extra:
                errors = {k: ["not a field of this form"] for k in extra}
                raise ValidationFailed(errors)
        values, errors = form_values(form, posted)
        if form.captcha:
            verifier = captchas.get(form.captcha)
            strings = {k: v for k, v in posted.items() if isinstance(v, str)}
            if not verifier.verify(strings, client_address()):
                raise ValidationFailed(
                    {"_captcha": [_("Please confirm that you are not a robot.")]}
                )
        signed = linked_record(form, posted.get(RECORD)) if form.record_link else None
        principal = _setup_or_raise(form)
        service = _records(store, principal, form.entity)
        try:
            with store.transaction(principal.user_id) as unit:
                if signed is not None:
                    try:
                        service.update(signed.record_id, {**values, **dict(form.values)})
                    except NotFound:  # the record is gone since the link was sent
                        raise Refused(
                            404,
                            _("This link is not valid. Please use the link from your email."),
                            "spam",
                        ) from None
                else:
                    service.create({**values, **dict(form.values)})
                if errors:
                    # the record's own checks ran too, so every field's message shows at
                    # once; raising here rolls the record back
                    raise ValidationFailed(errors)
                count(form, "accepted", unit.connection)
        except ValidationFailed as exc:
            raise ValidationFailed({**exc.errors, **errors}) from None
    except Refused as exc:
        count(form, exc.outcome)
        return _refused(form, exc, posted)
    except ValidationFailed as exc:
        count(form, "invalid")
        return _invalid(form, exc.errors, posted)
    except (NotSetUp, Forbidden) as exc:
        return _not_set_up(form, str(exc))
    return _success(form)


def _invalid(form: WebForm, errors: Mapping, posted):
    on_form = {f.name for f in form.fields} | {"_captcha"}
    entity = g.catalog.entity(form.entity)
    general = []
    for name, messages in errors.items():
        if name in on_form:
            continue
        f = entity.fields.get(name)
        where = "" if name == ALL_KEY or f is None else f.label.get(g.ui_locale)
        for message in messages:
            text = translate_error(message, g.ui_locale)
            general.append(f"{where}: {text}" if where else text)
    if wants_json():
        body = {
            "status": "invalid",
            "message": _("Please correct the marked fields."),
            "errors": {k: [translate_error(m, g.ui_locale) for m in v] for k, v in errors.items()},
        }
        return _cors(current_app.make_response((jsonify(body), 422)), form)
    if not general:
        general = [_("Please correct the marked fields.")]
    return render_form(form, posted, errors, general, status=422)


def limit_rate(form: WebForm) -> None:
    limiter = current_app.extensions.get("xrm_limiter")
    if limiter is None or not limiter.enabled:
        return
    rate = form.rate_limit
    item = RateLimitItemPerSecond(rate.count, rate.seconds)
    address = client_address()
    if not limiter.limiter.hit(item, "web_form", form.name, address):
        stats = limiter.limiter.get_window_stats(item, "web_form", form.name, address)
        wait = max(1, int(stats.reset_time - time.time()) + 1)
        raise Refused(
            429,
            _("Too many submissions from your address. Please try again later."),
            "limited",
            {"Retry-After": str(wait)},
        )


@bp.get("/<name>/embed.js")
def embed(name: str):
    """A script that puts the form in an iframe right after the ``<script>`` tag, sized to
    its content by the height the page reports (``static/js/public_form.js``)."""
    form = form_or_404(name)
    src = url_for(".page", name=form.name, embed="1", _external=True)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(src))

    def literal(value: str) -> str:
        # JSON is a JavaScript literal; "</" is escaped so the text cannot end a script
        return json.dumps(value).replace("</", "<\\/")

    script = f"""(function () {{
  var script = document.currentScript;
  if (!script) return;
  var frame = document.createElement("iframe");
  var lang = (document.documentElement.lang || "").slice(0, 2);
  frame.src = {literal(src)} + (lang ? "&lang=" + encodeURIComponent(lang) : "");
  frame.title = {literal(form.title.get(g.ui_locale))};
  frame.style.width = "100%";
  frame.style.border = "0";
  frame.style.minHeight = "480px";
  script.parentNode.insertBefore(frame, script.nextSibling);
  window.addEventListener("message", function (event) {{
    if (event.origin !== {literal(origin)} || event.source !== frame.contentWindow) return;
    var data = event.data || {{}};
    if (data.xrmForm === {literal(form.name)} && typeof data.height === "number") {{
      frame.style.height = Math.ceil(data.height) + "px";
    }}
  }});
}})();
"""
    response = current_app.make_response((script, 200))
    response.mimetype = "text/javascript"
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# ------------------------------------------------------------------------ set-up
def _allow_framing(response):
    # headers.py denies framing everywhere with X-Frame-Options; a public form may be
    # framed by the origins its CSP frame-ancestors names (which browsers then follow).
    if g.get("public_form_framed"):
        response.headers.pop("X-Frame-Options", None)
    return response


def init_app(app: Flask) -> None:
    """Register the public forms; their routes alone are exempt from the CSRF guard.
    Called before ``headers.init_app``, so ``_allow_framing`` runs after its headers."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.extensions["csrf"].exempt(bp)
    app.register_blueprint(bp)
    app.after_request(_allow_framing)

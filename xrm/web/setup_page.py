"""First-time setup in the browser: an empty instance (no user, setup never done) sends
every page to ``/setup``, where the setup wizard (``xrm/solutions/setup_wizard.py``, on
the wizard engine) asks for the organization, working hours, the administrator and the
modules, shows a review, installs with its progress shown stage by stage, and signs the
administrator in on the home dashboard.

The run's state travels in the page, signed with the application's secret (as the
wizards' pages do); the administrator's password is asked on the review and goes straight
to ``run_setup``, never into the state.  Installing runs in a thread of this process; the
page asks for its progress once a second.  Only the browser that started it can take the
signed-in session at the end, and once anyone exists the pages are closed."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import login_user
from itsdangerous import BadSignature, URLSafeSerializer

from ..forms.wizard import WizardRefused, WizardRun
from ..solutions import setup as S
from ..solutions import setup_wizard as SW
from . import current_store
from .ui.i18n import LANGUAGES

bp = Blueprint("setup", __name__)

SALT = "xrm-setup-run"
#: Stages of ``run_setup`` as the progress page names them, in order.
STAGES = ("modules", "calendar", "administrator", "sample_data", "settings")


@dataclass
class Job:
    """One installation running (or done) in this process."""

    owner: str  # the session that started it
    stages: list[str] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    result: S.SetupResult | None = None


_JOBS: dict[str, Job] = {}
_LOCK = threading.Lock()


# ------------------------------------------------------------------ the empty instance
def needs_setup(app) -> bool:
    """No user and setup never done; remembered once false (an instance never becomes
    empty again)."""
    if app.extensions.get("xrm_set_up"):
        return False
    store = app.extensions["xrm"]
    if store.settings().get("setup_done") or store.users():
        app.extensions["xrm_set_up"] = True
        return False
    return True


def _send_to_setup():
    # The pages people open (the UI and its sign-in); the API, webhooks and public forms
    # answer for themselves, as they would on any instance without the definitions asked.
    blueprint = request.blueprint or ""
    if not (blueprint.startswith("ui") or request.endpoint == "auth.login"):
        return None
    if not needs_setup(current_app):
        return None
    return redirect(url_for("setup.page"), code=303)


@bp.before_request
def _language():
    wanted = request.args.get("lang", "")[:2].lower()
    g.ui_locale = (
        wanted
        if wanted in LANGUAGES
        else session.get("setup_lang")
        or request.accept_languages.best_match(list(LANGUAGES), default="en")
    )
    session["setup_lang"] = g.ui_locale


# ------------------------------------------------------------------ state
def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt=SALT)


def _offered() -> dict[str, S.Module]:
    return S.modules_offered()


def _run(offered) -> WizardRun:
    wizard = SW.setup_wizard(offered)
    raw = request.form.get("_state")
    if not raw:
        return WizardRun(wizard, locale=g.ui_locale)
    try:
        data = _serializer().loads(raw)
        return WizardRun.from_dict(wizard, data, locale=g.ui_locale)
    except (BadSignature, WizardRefused):
        abort(400)


def _render(run: WizardRun, offered, errors=None, general=None, status=200):
    return render_template(
        "setup/page.html",
        run=run,
        step=run.step(),
        steps=run.visible_steps(),
        values=run.visible_values(),
        state=_serializer().dumps(run.to_dict()),
        errors=errors or {},
        general=general or [],
        added=SW.added_modules(run, offered),
        offered=offered,
        lang=g.ui_locale,
    ), status


def _posted(run: WizardRun) -> dict:
    posted = {}
    for item in run.step().inputs:
        if item.field.type == "multi_choice":
            posted[item.name] = request.form.getlist(item.name)
        elif item.field.type == "boolean":
            posted[item.name] = request.form.get(item.name, "")
        elif item.name in request.form:
            posted[item.name] = request.form[item.name]
    return posted


# ------------------------------------------------------------------ pages
@bp.route("/setup", methods=["GET", "POST"])
def page():
    job_id = session.get("setup_job")
    if job_id in _JOBS:
        return render_template(
            "setup/progress.html", job=_JOBS[job_id], job_id=job_id, stages=STAGES, lang=g.ui_locale
        )
    if not needs_setup(current_app):
        return redirect("/", code=303)
    offered = _offered()
    run = _run(offered)
    if request.method == "GET":
        return _render(run, offered)
    action = request.form.get("_action", "next")
    if action == "back":
        run.back(_posted(run))
    elif action.startswith("go:"):
        try:
            run.go_to(action[3:], _posted(run))
        except WizardRefused:
            abort(400)
    elif action == "install":
        return _install(run, offered)
    else:
        errors = SW.submit(run, _posted(run), offered)
        if errors:
            return _render(run, offered, errors=errors, status=422)
    return _render(run, offered)


def _install(run: WizardRun, offered):
    password, again = request.form.get("password", ""), request.form.get("password_again", "")
    if password != again:
        return _render(run, offered, errors={"password": ["the two passwords differ"]}, status=422)
    try:
        answers = SW.answers(run, offered, password or None)
        answers.check(S.discover())
        policy = S.PasswordPolicy.from_settings(current_store().settings())
        problems = policy.problems(password, answers.admin_email) if password else []
        if problems:
            return _render(run, offered, errors={"password": problems}, status=422)
    except S.SetupError as exc:
        return _render(run, offered, general=[str(exc)], status=422)
    with _LOCK:
        if not needs_setup(current_app) or any(not j.done for j in _JOBS.values()):
            return redirect(url_for("setup.page"), code=303)
        owner = session.setdefault("setup_owner", secrets.token_urlsafe(16))
        job_id = secrets.token_urlsafe(16)
        job = _JOBS[job_id] = Job(owner=owner)
    session["setup_job"] = job_id
    store = current_store()
    threading.Thread(target=_work, args=(store, answers, job), daemon=True).start()
    return redirect(url_for("setup.page"), code=303)


def _work(store, answers: S.SetupAnswers, job: Job) -> None:
    try:
        job.result = S.run_setup(store, answers, progress=job.stages.append)
    except Exception as exc:  # noqa: BLE001 - shown to the person installing, in full
        job.error = str(exc) or type(exc).__name__
    finally:
        job.done = True


@bp.get("/setup/progress")
def progress():
    job_id = session.get("setup_job")
    job = _JOBS.get(job_id)
    if job is None or job.owner != session.get("setup_owner"):
        abort(404)
    if job.done and job.error is None:
        return "", 204, {"HX-Redirect": url_for("setup.done")}
    return render_template("setup/_progress.html", job=job, stages=STAGES, lang=g.ui_locale)


@bp.get("/setup/done")
def done():
    job_id = session.get("setup_job")
    job = _JOBS.get(job_id)
    if job is None or job.owner != session.get("setup_owner") or not job.done:
        return redirect(url_for("setup.page"), code=303)
    if job.error is not None:  # start again from the review with the reason
        _JOBS.pop(job_id, None)
        session.pop("setup_job", None)
        return redirect(url_for("setup.page"), code=303)
    from .auth import WebUser

    _JOBS.pop(job_id, None)
    result = job.result
    store = current_store()
    row = store.user(store.user_by_email(result.admin_email).id)
    session.clear()
    login_user(WebUser(row))
    current_app.extensions["xrm_set_up"] = True
    return render_template("setup/done.html", result=result, lang=g.ui_locale)


def init_app(app) -> None:
    app.before_request(_send_to_setup)
    app.register_blueprint(bp)

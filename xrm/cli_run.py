"""``xrm setup``, ``xrm run``, ``xrm user`` and ``xrm token``: bringing the platform up
and giving people access.  Registered into the ``xrm`` command by ``xrm/cli.py``."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import sys

from .cli import DATABASE_HELP, CommandError, _add_database, _store, command


# ------------------------------------------------------------------------------ setup
def _setup(args) -> int:
    from .solutions.setup import SetupAnswers, SetupError, run_setup

    with _store(args) as store:
        previous = store.settings()
        if not previous.get("setup_done") and not args.no_input and sys.stdin.isatty():
            _ask_missing(args)
        given = {
            "organization": args.organization,
            "locale": args.locale,
            "currency": args.currency,
            "time_zone": args.time_zone,
            "admin_email": args.admin_email,
            "admin_password": args.admin_password,
            "modules": tuple(args.modules.split(",")) if args.modules else None,
            "base_url": args.base_url,
        }
        # A second run keeps what the first one chose unless told otherwise.
        remembered = {
            k: previous[k]
            for k in ("organization", "locale", "currency", "time_zone")
            if k in previous
        }
        if "modules" in previous and given["modules"] is None:
            remembered["modules"] = tuple(previous["modules"])
        answers = SetupAnswers(
            **{**remembered, **{k: v for k, v in given.items() if v is not None}},
            sample_data=args.demo,
            sample_size=args.demo_size,
            password_min_length=args.password_min_length,
            password_deny=tuple(args.password_deny.split(","))
            if args.password_deny is not None
            else None,
        )
        try:
            result = run_setup(store, answers)
        except SetupError as exc:
            raise CommandError(str(exc), 2) from None
        if result.already_done:
            print(f"setup was done already; solutions: {', '.join(result.installed)}")
        else:
            print(f"set up {answers.organization!r}: solutions {', '.join(result.installed)}")
        if result.sample_counts:
            print(
                f"sample data: {sum(result.sample_counts.values())} records in {len(result.sample_counts)} entities"
            )
        if result.admin_password:
            print(
                f"administrator: {result.admin_email}  password: {result.admin_password}  (shown once)"
            )
        for member in result.demo_users:
            where = f"account {member.account}" if member.account else f"team {member.team}"
            print(
                f"demo {member.title}: {member.email} ({where})  "
                f"password: {member.password}  (shown once)"
            )
    return 0


def _ask(question: str, default: str, check=None, *, secret: bool = False) -> str:
    """One answer from the terminal, asked again until its check accepts it."""
    import getpass

    from .solutions.setup import SetupError

    while True:
        shown = f" [{default}]" if default and not secret else ""
        prompt = f"{question}{shown}: "
        answer = (getpass.getpass(prompt) if secret else input(prompt)).strip() or default
        try:
            return check(answer) if check else answer
        except SetupError as exc:
            print(f"  {exc}")


def _ask_missing(args) -> None:
    """``xrm setup`` in a terminal, on a database not set up yet: ask for every answer the
    options did not give, with the same checks the browser's setup wizard applies."""
    from .solutions import setup as S

    print("Setting up a new instance; press Enter to take the value in brackets.")
    if args.organization is None:
        args.organization = _ask("Organization", "My company", S.check_organization)
    if args.locale is None:
        args.locale = _ask("Language and locale (en, ru, en_GB...)", "en", S.check_locale)
    if args.currency is None:
        args.currency = _ask("Currency (ISO code)", "USD", S.check_currency)
    if args.time_zone is None:
        args.time_zone = _ask("Time zone", "UTC", S.check_time_zone)
    if args.admin_email is None:
        args.admin_email = _ask("Administrator's email", "admin@example.com", S.check_email)
    if args.admin_password is None:
        args.admin_password = (
            _ask("Administrator's password (Enter: generate one)", "", secret=True) or None
        )
    if args.modules is None:
        offered = S.modules_offered()
        language = args.locale.split("_")[0]
        for module in offered.values():
            needs = f" (needs {', '.join(module.depends)})" if module.depends else ""
            print(f"  {module.name}: {module.text('description', language)}{needs}")

        def modules(text: str) -> str:
            chosen = [m.strip() for m in text.split(",") if m.strip()]
            S.check_modules(chosen, offered)
            order, added = S.with_dependencies(chosen, offered)
            for name, needers in added.items():
                print(f"  {name} is added too: {', '.join(needers)} needs it")
            return ",".join(order)

        args.modules = _ask("Modules", ",".join(S.DEFAULT_MODULES), modules)
    if not args.demo:
        args.demo = _ask("Add sample data? (y/n)", "n").lower().startswith(("y", "д"))


@command("setup")
def _register_setup(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="set up a database: organization, administrator, modules, sample data"
    )
    _add_database(p)
    p.add_argument("--organization", help="organization name")
    p.add_argument("--locale", help="default locale, e.g. en or ru")
    p.add_argument("--currency", help="ISO 4217 currency code, e.g. USD or RUB")
    p.add_argument("--time-zone", help="IANA time zone, e.g. Europe/Moscow")
    p.add_argument("--admin-email", help="administrator's email (default admin@example.com)")
    p.add_argument(
        "--admin-password", help="administrator's password (default: generated and shown once)"
    )
    p.add_argument("--modules", help="comma-separated solution names (default core,sales)")
    p.add_argument(
        "--base-url",
        help="where people reach the web UI, for links in notifications and emails "
        "(default: the address xrm run serves; XRM_BASE_URL overrides it)",
    )
    p.add_argument(
        "--password-min-length",
        type=int,
        metavar="N",
        help="shortest password anyone may set (default 10; kept in the settings)",
    )
    p.add_argument(
        "--password-deny",
        metavar="WORDS",
        help="comma-separated passwords to refuse besides the built-in list of common ones",
    )
    p.add_argument("--demo", action="store_true", help="add sample data (once)")
    p.add_argument(
        "--no-input",
        action="store_true",
        help="never ask in a terminal: take the defaults for what the options do not give",
    )
    p.add_argument("--demo-size", type=int, default=25, help="sample records per entity")
    p.set_defaults(handler=_setup, parser=p)


# ------------------------------------------------------------------------------ run
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _run(args) -> int:
    import subprocess

    from . import supervisor
    from .storage.database import default_url
    from .web.server import serve

    url = args.database or default_url()
    if args.host in LOOPBACK and "XRM_COOKIE_SECURE" not in os.environ:
        # Served on loopback over plain HTTP, a Secure session cookie would not come back
        # from every browser; traffic that never leaves the machine needs no TLS.  Served
        # on another address (behind a TLS proxy), cookies stay Secure.
        os.environ["XRM_COOKIE_SECURE"] = "0"
    # Links in emails and notifications point at this server unless the base URL is set.
    served_host = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    if ":" in served_host:
        served_host = f"[{served_host}]"
    os.environ.setdefault("XRM_SERVED_URL", f"http://{served_host}:{args.port}")
    parent = os.getpid()
    keeper = None
    if not args.no_worker:
        # The embedded workflow worker (processes, reminders, email) runs beside the web
        # server, so reminders work with this one command on SQLite; its keeper
        # (xrm/supervisor.py) starts it again whenever it dies.  A plain subprocess rather
        # than multiprocessing: gunicorn forks its web workers from this process, and they
        # would inherit multiprocessing's bookkeeping of a child that is not theirs.  It
        # stops on SIGTERM, or when this process is gone.
        keeper = subprocess.Popen(
            supervisor.command(),
            env={**os.environ, "XRM_WORKER_DATABASE_URL": url, "XRM_WORKER_PARENT": str(parent)},
        )
    print(
        f"serving on http://{args.host}:{args.port} (database {url.split('@')[-1]})",
        file=sys.stderr,
    )
    if not _set_up(url):
        print(
            f"this database is not set up yet: open http://{args.host}:{args.port}/setup in a "
            "browser, or stop and run `xrm setup` (add --demo for sample data)",
            file=sys.stderr,
        )
    try:
        serve(host=args.host, port=args.port, workers=args.workers, database_url=url)
    finally:
        # gunicorn's forked workers leave serve() through here too; only the parent
        # owns the workflow worker's keeper.
        if keeper is not None and os.getpid() == parent:
            keeper.terminate()  # SIGTERM: the worker finishes its batch, then both stop
            try:
                keeper.wait(supervisor.STOP_GRACE + 5)
            except subprocess.TimeoutExpired:
                keeper.kill()  # the worker notices its keeper is gone and stops
    return 0


def _set_up(url: str) -> bool:
    """Has setup been done on this database?  (Opening it makes the platform tables, as
    the server is about to anyway.)"""
    import xrm

    try:
        store = xrm.open(url)
    except Exception:  # noqa: BLE001 - the server start reports a database it cannot open
        return True
    try:
        return bool(store.settings().get("setup_done"))
    finally:
        store.close()


@command("run")
def _register_run(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="serve the platform with gunicorn (loopback unless told otherwise)"
    )
    p.add_argument("--database", metavar="URL", help=DATABASE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument(
        "--no-worker", action="store_true", help="do not start the embedded workflow worker"
    )
    p.set_defaults(handler=_run, parser=p)


# ------------------------------------------------------------------------------ users and tokens
def _user_add(args) -> int:
    from .storage.users import UserError

    with _store(args) as store:
        try:
            account = store.find_account(args.account) if args.account else None
            user_id = store.add_user(
                args.email,
                args.name,
                password=args.password,
                roles=args.role or [],
                teams=args.team or [],
                locale=args.locale,
                time_zone=args.time_zone,
                account=account,
            )
        except UserError as exc:
            raise CommandError(str(exc)) from None
    print(f"user {args.email} created (id {user_id})")
    return 0


def _user_list(args) -> int:
    with _store(args) as store:
        for user in store.users():
            principal = store.principal(user.id)
            roles = ",".join(principal.roles) if principal else "-"
            print(
                f"{user.id:>5}  {user.email:<32} {user.name:<24} {roles}{'' if user.active else '  (inactive)'}"
            )
    return 0


EXPIRY_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """``30d``, ``12h``, ``2w`` from now, or a date (``2026-01-31``: that day's start,
    UTC) or an ISO date and time; it must lie in the future."""
    text = text.strip()
    relative = re.fullmatch(r"(\d+)\s*([hdw])", text.lower())
    if relative:
        moment = now + dt.timedelta(**{EXPIRY_UNITS[relative[2]]: int(relative[1])})
    else:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise CommandError(
                f"--expires {text!r}: expected e.g. 30d, 12h, 2w or a date such as 2026-01-31",
                2,
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    if moment <= now:
        raise CommandError(f"--expires {text!r} is not in the future", 2)
    return moment


def _token_create(args) -> int:
    with _store(args) as store:
        user = store.user_by_email(args.email)
        if user is None:
            raise CommandError(f"no user with email {args.email}")
        expires_at = parse_expiry(args.expires, store.clock.now()) if args.expires else None
        token = store.create_token(user.id, args.name or "", expires_at=expires_at)
    print(token)
    print("store it now: the token is shown once and kept only as a hash", file=sys.stderr)
    if expires_at is not None:
        print(f"it expires {expires_at:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
    return 0


def _when(moment: dt.datetime | None) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M}" if moment else "-"


def _token_list(args) -> int:
    with _store(args) as store:
        user_id = None
        if not args.all:
            if not args.email:
                raise CommandError("name a user's email, or --all", 2)
            user = store.user_by_email(args.email)
            if user is None:
                raise CommandError(f"no user with email {args.email}")
            user_id = user.id
        now = store.clock.now()
        rows = store.tokens(user_id)
    print(
        f"{'id':>5}  {'token':<12} {'user':<32} {'status':<8} {'created':<16}  {'last used':<16}  {'expires':<16}  name"
    )
    for row in rows:
        if row.revoked:
            status = "revoked"
        elif row.expires_at is not None and row.expires_at <= now:
            status = "expired"
        else:
            status = "active"
        shown = f"{row.prefix}…" if row.prefix else "-"
        print(
            f"{row.id:>5}  {shown:<12} {row.email:<32} {status:<8} {_when(row.created_at):<16}  "
            f"{_when(row.last_used_at):<16}  {_when(row.expires_at):<16}  {row.name}"
        )
    return 0


def _token_revoke(args) -> int:
    with _store(args) as store:
        if not store.revoke_token_id(args.id):
            raise CommandError(f"no token with id {args.id}")
    print(f"token {args.id} revoked")
    return 0


@command("user")
def _register_user(sub, name: str) -> None:
    p = sub.add_parser(name, help="manage users")
    commands = p.add_subparsers(dest="user_command", required=True)
    add = commands.add_parser("add", help="create a user")
    _add_database(add)
    add.add_argument("email")
    add.add_argument("--name")
    add.add_argument("--password")
    add.add_argument("--role", action="append", help="a role from the installed packs (repeatable)")
    add.add_argument("--team", action="append", help="a team, created if new (repeatable)")
    add.add_argument("--locale", default="en")
    add.add_argument("--time-zone", default="UTC")
    add.add_argument(
        "--account",
        help="the account the user belongs to, by id or name (a partner's user: the "
        "roles' account scope)",
    )
    add.set_defaults(handler=_user_add, parser=add)
    listing = commands.add_parser("list", help="list users and their roles")
    _add_database(listing)
    listing.set_defaults(handler=_user_list, parser=listing)


@command("token")
def _register_token(sub, name: str) -> None:
    p = sub.add_parser(name, help="API tokens")
    commands = p.add_subparsers(dest="token_command", required=True)
    create = commands.add_parser("create", help="create an API token for a user (shown once)")
    _add_database(create)
    create.add_argument("email")
    create.add_argument("--name", help="what the token is for")
    create.add_argument(
        "--expires",
        metavar="WHEN",
        help="when it stops working: 30d, 12h, 2w, or a date (2026-01-31, UTC); default never",
    )
    create.set_defaults(handler=_token_create, parser=create)
    listing = commands.add_parser("list", help="list API tokens (never their secret)")
    _add_database(listing)
    listing.add_argument("email", nargs="?", help="whose tokens")
    listing.add_argument("--all", action="store_true", help="everyone's tokens")
    listing.set_defaults(handler=_token_list, parser=listing)
    revoke = commands.add_parser("revoke", help="revoke an API token by its id (see list)")
    _add_database(revoke)
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=_token_revoke, parser=revoke)


# ------------------------------------------------------------------------------ workflow
@command("worker")
def _register_worker(sub, name: str) -> None:
    from .workflow.commands import add_worker

    add_worker(sub, _store)


@command("process")
def _register_process(sub, name: str) -> None:
    from .workflow.commands import add_process

    add_process(sub, _store)

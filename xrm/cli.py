"""The ``xrm`` command: check definitions, manage the database and packs, run benchmarks.

Exit codes: 0 success; 1 a problem to fix (definitions, a refused schema change, the
database); 2 a usage error (unknown option, unknown solution name, a bad database URL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import __version__

COMMANDS: dict[str, Callable] = {}
DATABASE_HELP = "database URL (default: $XRM_DATABASE_URL, else sqlite:///instance/xrm.db)"
EXIT_CODES = "exit codes: 0 success, 1 problems found (definitions, database), 2 usage error"


def command(name: str):
    """Register ``register(subparsers, name)``, which adds a top-level command."""

    def wrap(func):
        COMMANDS[name] = func
        return func

    return wrap


class CommandError(Exception):
    """A precise message for stderr (``xrm: ...``) and the exit code to end with."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _print_problems(problems, heading: str | None = None) -> None:
    if heading:
        print(heading, file=sys.stderr)
    for problem in problems:
        print(problem)
    count = len(problems)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)


# ------------------------------------------------------------------------------ database
def _masked(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show it as given
        return str(url)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


@contextlib.contextmanager
def _store(args) -> Iterator:
    """The store on ``--database``, with database failures turned into precise messages."""
    import sqlalchemy as sa

    import xrm

    from .metadata import DefinitionError
    from .storage.database import default_url

    url = args.database or default_url()
    try:
        store = xrm.open(url)
    except sa.exc.ArgumentError as exc:
        raise CommandError(f"not a usable database URL {url!r}: {exc}", 2) from None
    except ImportError as exc:
        raise CommandError(
            f"the database driver for {_masked(url)} is not installed ({exc}); for PostgreSQL: pip install 'xrm[postgres]'",
            2,
        ) from None
    except sa.exc.DBAPIError as exc:
        raise CommandError(f"cannot open database {_masked(url)}: {_reason(exc)}") from None
    except DefinitionError as exc:
        _print_problems(
            exc.problems, f"xrm: the solutions installed in {_masked(url)} no longer load:"
        )
        raise CommandError("fix or reinstall the solutions above") from None
    try:
        yield store
    except sa.exc.DBAPIError as exc:
        raise CommandError(f"database error on {_masked(url)}: {_reason(exc)}") from None
    finally:
        store.close()


def _add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", metavar="URL", help=DATABASE_HELP)


# ------------------------------------------------------------------------------ check, schemas
def _check(args) -> int:
    from .metadata import check

    started = time.perf_counter()
    catalog, problems = check(args.paths)
    elapsed = (time.perf_counter() - started) * 1000
    if problems:
        _print_problems(problems)
        return 1
    if args.database:
        # Users and teams that processes name by email or name exist only in a database.
        from .workflow.checks import database_problems

        with _store(args) as store:
            problems = database_problems(store, catalog)
        if problems:
            _print_problems(problems, f"xrm: against {_masked(args.database)}:")
            return 1
    deep = ""
    if args.deep:
        # What only shows when steps run: each process dry-run on sample records.
        from .deepcheck import deep_check

        started = time.perf_counter()
        report = deep_check(args.paths)
        elapsed += (time.perf_counter() - started) * 1000
        for line in report.skipped:
            print(f"xrm: --deep: not run: {line}", file=sys.stderr)
        if report.problems:
            _print_problems(report.problems)
            return 1
        deep = f", {report.ran} process{'es' if report.ran != 1 else ''} dry-run on sample records,"
    print(f"ok: {catalog.summary()} checked{deep} in {elapsed:.0f} ms")
    return 0


def _schemas(args) -> int:
    from .metadata.schemas import SCHEMA_DIR, write_published

    for path in write_published(SCHEMA_DIR if args.out is None else Path(args.out)):
        print(path)
    return 0


# ------------------------------------------------------------------------------ solution
def _pack_locations(names_or_paths: list[str]) -> list[Path]:
    """Each argument as a pack folder: a known solution name, else an existing path."""
    from .metadata import discover
    from .metadata.problems import did_you_mean, one_of

    available = None
    locations = []
    for arg in names_or_paths:
        looks_like_path = os.sep in arg or "/" in arg or arg.startswith(".")
        if not looks_like_path:
            available = available if available is not None else discover()
            if arg in available:
                locations.append(available[arg])
                continue
        path = Path(arg)
        if path.exists():
            locations.append(path)
            continue
        if looks_like_path:
            raise CommandError(f"no such folder: {arg}", 2)
        known = one_of(available) if available else "none found"
        raise CommandError(
            f"unknown solution {arg!r}{did_you_mean(arg, available or ())} (known: {known}; "
            "give a folder path for a pack elsewhere, or add its parent to XRM_SOLUTIONS_PATH)",
            2,
        )
    return locations


def _allowed_losses(args) -> list[str]:
    """``--allow-loss a.b --allow-loss c,d`` as names."""
    return [n.strip() for given in args.allow_loss or () for n in given.split(",") if n.strip()]


def _add_allow_loss(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-loss",
        action="append",
        metavar="NAME",
        help="allow the data loss the plan names NAME (entity.field, or a table for all of "
        "its columns); repeat it or separate names by commas",
    )


def _solution_install(args) -> int:
    from .metadata import DefinitionError
    from .metadata.loader import resolve_packs
    from .storage.schema import LossNotNamed, SchemaChangeRefused
    from .storage.store import LifecycleRefused

    locations = _pack_locations(args.packs)
    allow = _allowed_losses(args)
    with _store(args) as store:
        before = {name: s.version for name, s in store.catalog.solutions.items()}
        if getattr(args, "upgrade", False):
            missing = [p.name for p in resolve_packs(locations, with_dependencies=False)]
            missing = [name for name in missing if name not in before]
            if missing:
                raise CommandError(
                    f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                    f"installed: xrm solution install {' '.join(missing)}"
                )
        try:
            if not args.plan and not args.accept_conflicts:
                _refuse_conflicts(store, locations)
            catalog, plan = store.install(
                locations, dry_run=args.plan, demo=args.demo, allow_loss=allow
            )
        except DefinitionError as exc:
            _print_problems(exc.problems)
            return 1
        except SchemaChangeRefused as exc:
            for line in exc.plan.lines():
                print(line)
            raise CommandError(str(exc)) from None
        except (LifecycleRefused, LossNotNamed) as exc:
            raise CommandError(str(exc)) from None
        for line in plan.lines():
            print(line)
        if args.plan:
            if plan.refused:
                count = len(plan.refused)
                raise CommandError(
                    f"{count} schema change{'s' if count != 1 else ''} refused: installing would fail"
                )
            if plan.unallowed:
                raise CommandError(_loss_message(plan.unallowed))
            return 0
        installed = []
        wanted = {p.name for p in resolve_packs(locations)}
        for name in (n for n in catalog.solutions if n in wanted):  # dependency order
            version = catalog.solutions[name].version
            old = before.get(name)
            installed.append(
                f"{name} {version}" if old in (None, version) else f"{name} {old} -> {version}"
            )
        print(f"installed {', '.join(installed)} (catalog version {catalog.version})")
    return 0


def _loss_message(losses) -> str:
    names = ",".join(x.key for x in losses)
    return (
        f"{len(losses)} data loss{'es' if len(losses) != 1 else ''} not allowed: nothing was "
        f"applied; to accept, add --allow-loss {names}"
    )


def _refuse_conflicts(store, locations) -> None:
    """An upgrade that changes definitions administrators customized applies nothing
    until they are accepted (the customizations stay on top either way)."""
    from .solutions.lifecycle import plan_install

    if not store.customization_documents():
        return
    plan = plan_install(store, locations)
    if plan.conflicts:
        for line in plan.lines():
            if line.startswith("!"):
                print(line)
        raise CommandError(
            f"{len(plan.conflicts)} customization(s) conflict with this change: review them "
            "(xrm solution plan), then install again with --accept-conflicts"
        )


def _solution_plan(args) -> int:
    from .metadata import DefinitionError
    from .solutions.lifecycle import plan_install, plan_uninstall
    from .storage.store import LifecycleRefused

    with _store(args) as store:
        try:
            if args.uninstall:
                plan = plan_uninstall(store, args.pack)
            else:
                plan = plan_install(store, _pack_locations([args.pack]))
        except DefinitionError as exc:
            _print_problems(exc.problems)
            return 1
        except LifecycleRefused as exc:
            raise CommandError(str(exc)) from None
    for line in plan.lines():
        print(line)
    if plan.schema.refused:
        raise CommandError(f"{len(plan.schema.refused)} schema change(s) refused")
    if plan.schema.unallowed:
        print(
            f"xrm: the change needs --allow-loss {','.join(x.key for x in plan.schema.unallowed)}",
            file=sys.stderr,
        )
    return 0


def _solution_uninstall(args) -> int:
    from .metadata import DefinitionError
    from .solutions.lifecycle import plan_uninstall
    from .storage.schema import LossNotNamed, SchemaChangeRefused
    from .storage.store import LifecycleRefused

    with _store(args) as store:
        if args.purge and not args.plan:  # the purge's losses are known before anything
            _purge_losses_allowed(store, args, after_uninstall=args.name)
        try:
            plan = plan_uninstall(store, args.name)
            for line in plan.lines():
                print(line)
            if args.plan:
                return 0
            catalog, _ = store.uninstall(args.name)
        except DefinitionError as exc:  # e.g. a customization of one of its entities
            _print_problems(exc.problems)
            raise CommandError(
                f"{args.name} cannot be uninstalled while the definitions above refer to it"
            ) from None
        except LifecycleRefused as exc:
            raise CommandError(str(exc)) from None
        print(f"uninstalled {args.name} (catalog version {catalog.version}); its data is kept")
        if args.purge:
            try:
                _plan, dropped = store.purge(allow_loss=_allowed_losses(args))
            except (SchemaChangeRefused, LossNotNamed) as exc:
                raise CommandError(str(exc)) from None
            for line in dropped:
                print(line)
            print(f"purged: {len(dropped)} table(s) and column(s) dropped")
    return 0


def _purge_losses_allowed(store, args, after_uninstall: str | None = None) -> None:
    """Refuse, before anything is changed, a purge whose losses ``--allow-loss`` does not
    name all: the tables and columns holding data, with their rows."""
    from .storage.schema import LossNotNamed, plan_schema
    from .storage.store import purge_losses
    from .storage.tables import tables_for

    if after_uninstall is not None:
        catalog, _schema = store.uninstall(after_uninstall, dry_run=True)
    else:
        catalog = store.refresh()
    with store.engine.connect() as conn:
        plan = plan_schema(conn, tables_for(catalog))
        plan.data_losses = purge_losses(conn, plan)
    unknown = plan.allow(_allowed_losses(args))
    if plan.unallowed or unknown:
        for loss in plan.losses:
            print(loss.line())
        if unknown:
            raise CommandError(str(LossNotNamed(unknown, plan.losses)))
        raise CommandError(_loss_message(plan.unallowed))


def _solution_purge(args) -> int:
    from .storage.schema import LossNotNamed, SchemaChangeRefused

    with _store(args) as store:
        try:
            plan, dropped = store.purge(dry_run=args.plan, allow_loss=_allowed_losses(args))
        except (SchemaChangeRefused, LossNotNamed) as exc:
            if isinstance(exc, SchemaChangeRefused):
                for loss in exc.plan.losses:
                    print(loss.line())
                raise CommandError(_loss_message(exc.plan.unallowed)) from None
            raise CommandError(str(exc)) from None
    for line in dropped:
        print(line)
    if args.plan:
        for loss in plan.losses:
            print(loss.line())
    if not dropped:
        print("nothing to purge: every table and column is defined")
    elif not args.plan:
        print(f"purged: {len(dropped)} table(s) and column(s) dropped")
    return 0


def _solution_export(args) -> int:
    from .solutions.export import ExportError, export_customizations

    with _store(args) as store:
        try:
            written = export_customizations(store, Path(args.to), args.name, args.version)
        except ExportError as exc:
            raise CommandError(str(exc), 2) from None
    print(
        f"exported {len(written) - 1} customization document(s) as pack {args.name} "
        f"{args.version} to {args.to} (install it elsewhere with xrm solution install {args.to})"
    )
    return 0


def _solution_test(args) -> int:
    from .metadata import DefinitionError
    from .solutions.scenarios import run_scenarios

    locations = _pack_locations(args.packs)
    try:
        outcomes = run_scenarios(locations, only=args.k)
    except DefinitionError as exc:
        _print_problems(exc.problems)
        return 1
    for outcome in outcomes:
        print(f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.solution}: {outcome.name}")
        for failure in outcome.failures:
            print(f"      {failure}")
    failed = sum(not o.passed for o in outcomes)
    print(
        f"{len(outcomes) - failed} passed, {failed} failed"
        + ("" if outcomes else " (no scenarios found: a pack's tests/*.yaml holds them)")
    )
    return 1 if failed else 0


def _solution_list(args) -> int:
    import sqlalchemy as sa

    from .storage import tables as T

    with _store(args) as store, store.engine.connect() as conn:
        s = T.solutions
        rows = conn.execute(
            sa.select(s.c.name, s.c.version, s.c.installed_at).order_by(s.c.position)
        ).all()
        order = {name: i for i, name in enumerate(store.catalog.solutions)}  # dependency order
    rows.sort(key=lambda r: order.get(r.name, len(order)))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "version": r.version,
                        "installed_at": r.installed_at.isoformat(),
                    }
                    for r in rows
                ]
            )
        )
        return 0
    if not rows:
        print("no solutions installed")
        return 0
    table = [("NAME", "VERSION", "INSTALLED")] + [
        (r.name, r.version, r.installed_at.strftime("%Y-%m-%d %H:%M UTC")) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    for name, version, installed in table:
        print(f"{name:<{widths[0]}}  {version:<{widths[1]}}  {installed}")
    return 0


@command("solution")
def _register_solution(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="install, plan, uninstall, purge, export, test and list solution packs",
        description="Install, plan, uninstall, purge, export, test and list solution packs.",
        epilog=EXIT_CODES,
    )
    commands = p.add_subparsers(
        dest="solution_command",
        required=True,
        metavar="{install,upgrade,plan,uninstall,purge,export,test,list}",
    )

    install = commands.add_parser(
        "install",
        help="install or update packs (and the packs they depend on)",
        description="Install or update packs and what they depend on, all or nothing: the schema "
        "plan is printed, then applied with the catalog change in one transaction.",
        epilog="A NAME is looked up on the solution search path (XRM_SOLUTIONS_PATH, the shipped "
        "packs, the xrm.solutions entry points); a PATH is a pack folder or a "
        f"folder of packs. {EXIT_CODES}",
    )
    install.add_argument(
        "packs", nargs="+", metavar="NAME|PATH", help="solution name or pack folder"
    )
    install.add_argument(
        "--plan", action="store_true", help="print the schema plan only; change nothing"
    )
    install.add_argument(
        "--demo", action="store_true", help="also load the packs' sample data (demo/)"
    )
    install.add_argument(
        "--accept-conflicts",
        action="store_true",
        help="install even though administrators customized definitions it changes",
    )
    _add_allow_loss(install)
    _add_database(install)
    install.set_defaults(handler=_solution_install, parser=install)

    upgrading = commands.add_parser(
        "upgrade",
        help="upgrade installed packs (install, refused for a pack not installed)",
        description="Upgrade installed packs to the version found, all or nothing, as "
        "install does; a pack that is not installed is refused.",
        epilog=EXIT_CODES,
    )
    upgrading.add_argument("packs", nargs="+", metavar="NAME|PATH")
    upgrading.add_argument("--plan", action="store_true", help="print the plan only")
    upgrading.add_argument("--demo", action="store_true", help="also load sample data (demo/)")
    upgrading.add_argument(
        "--accept-conflicts",
        action="store_true",
        help="upgrade even though administrators customized definitions it changes",
    )
    _add_allow_loss(upgrading)
    _add_database(upgrading)
    upgrading.set_defaults(handler=_solution_install, parser=upgrading, upgrade=True)

    planning = commands.add_parser(
        "plan",
        help="what installing or upgrading a pack (or uninstalling one) would do",
        description="Print what installing or upgrading a pack would change, and change "
        "nothing: versions, definitions added, changed and removed, the schema plan, data "
        "held by tables and columns no longer defined, and the administrators' "
        "customizations of the definitions it touches.",
        epilog=EXIT_CODES,
    )
    planning.add_argument("pack", metavar="NAME|PATH")
    planning.add_argument(
        "--uninstall", action="store_true", help="plan uninstalling the installed pack NAME"
    )
    _add_database(planning)
    planning.set_defaults(handler=_solution_plan, parser=planning)

    removing = commands.add_parser(
        "uninstall",
        help="take a pack's definitions out; its data stays unless --purge",
        description="Uninstall a pack, all or nothing: refused while an installed pack "
        "depends on it. Its tables and columns keep their data unless --purge drops what "
        "no definition uses any more.",
        epilog=EXIT_CODES,
    )
    removing.add_argument("name")
    removing.add_argument("--purge", action="store_true", help="also drop its data")
    removing.add_argument("--plan", action="store_true", help="print the plan only")
    _add_allow_loss(removing)
    _add_database(removing)
    removing.set_defaults(handler=_solution_uninstall, parser=removing)

    purging = commands.add_parser(
        "purge",
        help="drop tables and columns no definition uses any more, with their data",
        epilog=EXIT_CODES,
    )
    purging.add_argument("--plan", action="store_true", help="list what would go; drop nothing")
    _add_allow_loss(purging)
    _add_database(purging)
    purging.set_defaults(handler=_solution_purge, parser=purging)

    exporting = commands.add_parser(
        "export",
        help="write the customization layer as a pack folder that installs elsewhere",
        epilog=EXIT_CODES,
    )
    exporting.add_argument("--to", required=True, metavar="DIR", help="a new or empty folder")
    exporting.add_argument("--name", required=True, help="the exported pack's name")
    exporting.add_argument("--version", default="1.0.0", help="its version (default 1.0.0)")
    _add_database(exporting)
    exporting.set_defaults(handler=_solution_export, parser=exporting)

    testing = commands.add_parser(
        "test",
        help="run packs' YAML scenarios (tests/*.yaml) on throwaway databases",
        description="Run the scenarios in the packs' tests/ folders, each on a throwaway "
        "SQLite database with a clock that moves only when a scenario waits; every failed "
        "expectation is printed at its line.",
        epilog=EXIT_CODES,
    )
    testing.add_argument("packs", nargs="+", metavar="NAME|PATH")
    testing.add_argument("-k", metavar="TEXT", help="only the scenarios whose name contains TEXT")
    testing.set_defaults(handler=_solution_test, parser=testing)

    listing = commands.add_parser(
        "list",
        help="installed packs and their versions",
        description="The packs installed in the database, in install order.",
    )
    listing.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    _add_database(listing)
    listing.set_defaults(handler=_solution_list, parser=listing)


# ------------------------------------------------------------------------------ db
def _db_plan(args) -> int:
    with _store(args) as store:
        plan = store.plan()
    if args.json:
        print(json.dumps(plan.as_dict()))
    else:
        for line in plan.lines():
            print(line)
    return 0


def _db_url(args) -> int:
    from .storage.database import default_url, normalize_url

    url = args.database or default_url()
    try:
        url = normalize_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError: not a URL
        raise CommandError(f"not a database URL {url!r}: {exc}", 2) from None
    print(url if args.show_password else _masked(url))
    return 0


@command("db")
def _register_db(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="inspect the database", description="Inspect the database.", epilog=EXIT_CODES
    )
    commands = p.add_subparsers(dest="db_command", required=True, metavar="{plan,url}")

    plan = commands.add_parser(
        "plan",
        help="what a schema sync of the installed catalog would change",
        description="Compare the installed catalog with the database: tables, columns and indexes "
        "to add, refused type changes, and columns and tables kept with their data.",
    )
    plan.add_argument("--json", action="store_true", help="the plan as a JSON object")
    _add_database(plan)
    plan.set_defaults(handler=_db_plan, parser=plan)

    url = commands.add_parser(
        "url",
        help="the database URL in use",
        description="Print the database URL the other commands would use (password hidden).",
    )
    url.add_argument("--show-password", action="store_true", help="print the password too")
    _add_database(url)
    url.set_defaults(handler=_db_url, parser=url)


# ------------------------------------------------------------------------------ bench
def _benchmarks_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _suites() -> list[str]:
    folder = _benchmarks_root() / "benchmarks"
    return sorted(p.stem[len("bench_") :] for p in folder.glob("bench_*.py"))


def _bench(args) -> int:
    from importlib import import_module

    if args.suite is None:
        args.parser.print_help()
        return 0 if args.help else 2
    rest = list(args.rest)
    if args.help:
        rest.append("--help")
    root = str(_benchmarks_root())
    if (_benchmarks_root() / "benchmarks").is_dir() and root not in sys.path:
        sys.path.insert(0, root)  # benchmarks/ lives in the source tree, not in the package
    module_name = f"benchmarks.bench_{args.suite}"
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, "benchmarks"):
            raise
        from .metadata.problems import did_you_mean

        suites = _suites()
        raise CommandError(
            f"unknown benchmark suite {args.suite!r}{did_you_mean(args.suite, suites)} (known: {', '.join(suites) or 'none'})",
            2,
        ) from None
    try:
        result = module.main(rest)
    except SystemExit as exc:  # the suite's own --help or usage error
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        return exc.code or 0
    if isinstance(result, dict):
        print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


def _register_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run a benchmark suite and print its figures as JSON",
        description="Run benchmarks/bench_SUITE.py and print the figures it returns as JSON. "
        "Options after the suite name that are not --json go to the suite "
        "(xrm bench SUITE --help shows them).",
        epilog=EXIT_CODES,
        add_help=False,
        allow_abbrev=False,
    )
    p.add_argument("suite", nargs="?", help="storage, metadata, ...")
    p.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
    p.add_argument(
        "-h", "--help", action="store_true", help="this help, or the suite's after its name"
    )
    p.set_defaults(handler=_bench, parser=p, accepts_extra=True, rest=[])


# ------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrm", description="A low-code XRM platform.", epilog=EXIT_CODES
    )
    parser.add_argument("--version", action="version", version=f"xrm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "check", help="validate solution packs and report every problem", epilog=EXIT_CODES
    )
    p.add_argument(
        "paths", nargs="*", help="pack folders, or folders of packs (default: all found)"
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="also check the users and teams that processes name against this database",
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help="also dry-run every process on sample records in a throwaway SQLite database",
    )
    p.set_defaults(handler=_check, parser=p)

    p = sub.add_parser("schemas", help="write the JSON Schemas of the definition formats")
    p.add_argument("--out", help="folder (default: xrm/metadata/schemas)")
    p.set_defaults(handler=_schemas, parser=p)

    _register_bench(sub)

    for name, register in COMMANDS.items():
        register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "accepts_extra", False):
            args.rest = extra
        else:
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args) or 0
    except CommandError as exc:
        print(f"xrm: {exc}", file=sys.stderr)
        return exc.code


from . import (  # noqa: E402 - registers the commands of these modules
    cli_backup,  # noqa: F401 - backup, restore
    cli_data,  # noqa: F401 - import, export
    cli_run,  # noqa: F401 - setup, run, user, token
)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

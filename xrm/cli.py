"""The ``xrm`` command: check definitions, manage the database and packs, run the server."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

COMMANDS: dict[str, Callable] = {}


def command(name: str):
    def wrap(func):
        COMMANDS[name] = func
        return func

    return wrap


def _check(args) -> int:
    from .metadata import check

    started = time.perf_counter()
    catalog, problems = check(args.paths)
    elapsed = (time.perf_counter() - started) * 1000
    if problems:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", file=sys.stderr)
        return 1
    print(f"ok: {catalog.summary()} checked in {elapsed:.0f} ms")
    return 0


def _schemas(args) -> int:
    from .metadata.schemas import SCHEMA_DIR, write_published

    for path in write_published(SCHEMA_DIR if args.out is None else __import__("pathlib").Path(args.out)):
        print(path)
    return 0


def _bench(args) -> int:
    from importlib import import_module

    module = import_module(f"benchmarks.bench_{args.suite}")
    result = module.main(args.rest)
    if isinstance(result, dict):
        print(json.dumps(result, indent=None if args.json else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrm", description="A low-code XRM platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate solution packs and report every problem")
    p.add_argument("paths", nargs="*", help="pack folders, or folders of packs (default: all found)")
    p.set_defaults(handler=_check)

    p = sub.add_parser("schemas", help="write the JSON Schemas of the definition formats")
    p.add_argument("--out", help="folder (default: xrm/metadata/schemas)")
    p.set_defaults(handler=_schemas)

    p = sub.add_parser("bench", help="run a benchmark suite and print its figures")
    p.add_argument("suite", help="metadata, storage, ...")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_bench)

    for name, register in COMMANDS.items():
        register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args) or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

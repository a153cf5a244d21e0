"""Metadata engine benchmark: how fast packs load, and what a big catalog costs in memory.

``xrm bench metadata [--json]`` prints:

- ``load_shipped_packs_ms``: a cold process imports xrm and loads, validates and compiles
  every shipped pack; measured inside that process (import included), median of 5 runs.
  The processes start as an installed platform does, with byte code compiled once (pip
  compiles it at install; here an untimed first run writes it to a temporary
  ``PYTHONPYCACHEPREFIX``) and the parsed definitions to a parse cache
  (``XRM_CACHE_DIR``, see ``xrm/metadata/parse_cache.py``), so the figure is the
  platform's start and not Python's compiler or the YAML parser. Those packs built clean
  before, so forms, processes, reports and the other later sections wait for first use
  (``catalog.Sections``); ``shipped_later_sections_ms`` is what that first use then costs
  (not part of the target).  ``shipped_uncached_ms`` is the same start with the parse
  cache off.  ``shipped_from_source_ms`` is the same start with our modules compiled
  from source every time (a checkout run with ``PYTHONDONTWRITEBYTECODE``), for reference.
- ``load_500_entities_ms``: ``load_catalog`` of a generated pack (parse cache off: a pack
  seen for the first time) of 500 entities x 40 fields
  of mixed types (lookups between them, choices over option sets, formulas, children and
  rollups, one view each), in a fresh process; median of the runs.
- ``rss_mb``: the largest peak resident set of those 500-entity processes.

Targets: shipped <= 150 ms, 500 entities <= 1500 ms, <= 150 MB.  Options: ``--runs N``,
``--entities N``, ``--fields N``, ``--keep DIR`` (write the generated pack there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "xrm" / "solutions" / "packs"
TARGETS = {"load_shipped_packs_ms": 150, "load_500_entities_ms": 1500, "rss_mb": 150}

# Runs in a fresh interpreter; prints one line of JSON.  Timing starts before `import xrm`.
_CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
import xrm
from xrm.metadata import load_catalog
imported = time.perf_counter()
catalog = load_catalog(sys.argv[1:])
done = time.perf_counter()
views = len(catalog.views)
later = len(catalog.processes) + len(catalog.forms)  # built on first use when checked before
print(json.dumps({
    "total_ms": (done - started) * 1000,
    "import_ms": (imported - started) * 1000,
    "load_ms": (done - imported) * 1000,
    "later_ms": (time.perf_counter() - done) * 1000,
    "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "solutions": len(catalog.solutions),
    "entities": len(catalog.entities),
    "fields": catalog.field_count,
    "option_sets": len(catalog.option_sets),
    "views": views,
}))
"""


def run_child(paths: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *paths],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mb(rss_kb: int) -> float:
    # ru_maxrss is kilobytes on Linux and bytes on macOS
    return rss_kb / 1024 / (1024 if sys.platform == "darwin" else 1)


# ------------------------------------------------------------------------ the generated pack
_SCALARS = [
    ("text", "{type: text, max_length: 120, label: {en: LABEL, ru: LABEL}}"),
    ("long_text", "{type: long_text}"),
    ("integer", "{type: integer, min: 0}"),
    ("decimal", "{type: decimal, precision: 12, scale: 3}"),
    ("money", "{type: money, currency: EUR}"),
    ("percent", "{type: percent, min: 0, max: 100}"),
    ("date", "{type: date}"),
    ("datetime", "{type: datetime}"),
    ("boolean", "{type: boolean, default: false}"),
    ("email", "{type: email}"),
    ("phone", "{type: phone}"),
    ("url", "{type: url}"),
    ("tags", "{type: tags}"),
    ("rating", "{type: rating}"),
    ("duration", "{type: duration}"),
    ("time", "{type: time}"),
]
OPTION_SETS = 40


def generate_pack(folder: Path, entities: int = 500, fields: int = 40, seed: int = 500) -> dict:
    """Write a pack of ``entities`` entities with exactly ``fields`` fields each."""
    rnd = random.Random(seed)
    (folder / "entities").mkdir(parents=True, exist_ok=True)
    (folder / "option_sets").mkdir(exist_ok=True)
    (folder / "views").mkdir(exist_ok=True)
    (folder / "solution.yaml").write_text(
        "solution: bench\nversion: 1.0.0\nlabel: {en: Benchmark, ru: Тест}\n", encoding="utf-8"
    )
    sets = ["option_sets:"]
    for s in range(OPTION_SETS):
        sets.append(f"  set_{s:02d}:")
        sets.append(f"    label: {{en: Set {s}, ru: Набор {s}}}")
        sets.append("    options:")
        for o in range(rnd.randint(3, 12)):
            sets.append(f"      - {{value: opt_{o}, label: {{en: Option {o}, ru: Вариант {o}}}}}")
    (folder / "option_sets" / "sets.yaml").write_text("\n".join(sets) + "\n", encoding="utf-8")

    names = [f"thing_{i:03d}" for i in range(entities)]
    views = ["views:"]
    total_fields = 0
    for i, name in enumerate(names):
        child = names[i + 1] if i + 1 < entities else None
        lines = [
            f"entity: {name}",
            f"label: {{en: Thing {i}, ru: Вещь {i}}}",
            "title: name",
            "search: [name, code]",
            "fields:",
            "  name: {type: text, required: true, max_length: 200}",
            "  code: {type: text, max_length: 20, unique: true}",
            "  amount: {type: money}",
            "  quantity: {type: integer, default: 1}",
            '  total: {type: money, formula: "amount * quantity"}',
            "  stage: {type: choice, options: set_00, default: opt_0}",
            f"  parent: {{type: lookup, to: {names[i - 1] if i else name}, on_delete: set_null}}",
            f"  related: {{type: lookup, to: {names[rnd.randrange(entities)]}}}",
            "  owner_user: {type: user}",
        ]
        if child:
            lines.append(f"  subs: {{type: children, entity: {child}, via: parent}}")
            lines.append("  subs_total: {type: money, rollup: {children: subs, sum: amount}}")
        else:
            lines.append(
                "  label_text: {type: formula, expression: \"name ~ ' ' ~ code\", result: text}"
            )
            lines.append("  flags: {type: multi_choice, options: set_01}")
        count = len(lines) - 5
        extra = 0
        while count < fields:
            kind = rnd.random()
            fname = f"f{extra:02d}"
            extra += 1
            if kind < 0.15:
                lines.append(
                    f"  {fname}: {{type: choice, options: set_{rnd.randrange(OPTION_SETS):02d}}}"
                )
            elif kind < 0.2:
                lines.append(
                    f"  {fname}: {{type: multi_choice, options: set_{rnd.randrange(OPTION_SETS):02d}}}"
                )
            elif kind < 0.28:
                lines.append(f"  {fname}: {{type: lookup, to: {names[rnd.randrange(entities)]}}}")
            elif kind < 0.33:
                lines.append(
                    f'  {fname}: {{type: decimal, formula: "amount * {rnd.randint(2, 9)} + quantity"}}'
                )
            else:
                type_name, spec = rnd.choice(_SCALARS)
                lines.append(f"  {fname}: " + spec.replace("LABEL", f"Field {extra}"))
            count += 1
        lines += [
            "validations:",
            "  - when: {all: [[amount, lt, 0], [stage, eq, opt_1]]}",
            "    message: {en: Amount cannot be negative here., ru: Сумма не может быть отрицательной.}",
            "indexes:",
            "  - {fields: [code, stage]}",
        ]
        total_fields += count
        (folder / "entities" / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        views += [
            f"  {name}_open:",
            f"    entity: {name}",
            "    columns: [name, code, amount, stage, parent, parent.name]",
            "    filter: {all: [[stage, in, [opt_0, opt_1]], [amount, gt, 10], [parent.amount, is_not_empty]]}",
            "    sort: [[name, asc]]",
            "    quick_filters: [stage, owner]",
            f"  {name}_board: {{entity: {name}, kind: kanban, group_by: stage, card: [name, amount]}}",
        ]
    (folder / "views" / "views.yaml").write_text("\n".join(views) + "\n", encoding="utf-8")
    return {"entities": entities, "fields": total_fields, "views": 2 * entities}


# ------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="xrm bench metadata")
    parser.add_argument("--runs", type=int, default=5, help="cold runs of the shipped packs")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the generated pack")
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--fields", type=int, default=40)
    parser.add_argument("--keep", help="write the generated pack to this folder")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # xrm bench's own
    args = parser.parse_args([a for a in (argv or []) if a != "--"])

    with tempfile.TemporaryDirectory(prefix="xrm-bench-pycache-") as pycache:
        compiled = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
        }
        compiled["PYTHONPYCACHEPREFIX"] = pycache
        compiled["XRM_CACHE_DIR"] = pycache
        run_child([str(SHIPPED)], compiled)  # writes the byte code and parse cache, untimed
        shipped = [run_child([str(SHIPPED)], compiled) for _ in range(args.runs)]
        unparsed = [
            run_child([str(SHIPPED)], {**compiled, "XRM_CACHE_DIR": "off"})
            for _ in range(args.runs)
        ]
    from_source = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    from_source["PYTHONDONTWRITEBYTECODE"] = "1"
    from_source["XRM_CACHE_DIR"] = "off"
    sourced = [run_child([str(SHIPPED)], from_source) for _ in range(3)]
    result: dict = {
        "load_shipped_packs_ms": round(statistics.median(r["total_ms"] for r in shipped), 1),
        "shipped_import_ms": round(statistics.median(r["import_ms"] for r in shipped), 1),
        "shipped_load_ms": round(statistics.median(r["load_ms"] for r in shipped), 1),
        "shipped_later_sections_ms": round(statistics.median(r["later_ms"] for r in shipped), 1),
        "shipped_uncached_ms": round(statistics.median(r["total_ms"] for r in unparsed), 1),
        "shipped_from_source_ms": round(statistics.median(r["total_ms"] for r in sourced), 1),
        "shipped_solutions": shipped[0]["solutions"],
        "shipped_entities": shipped[0]["entities"],
        "shipped_fields": shipped[0]["fields"],
    }

    with tempfile.TemporaryDirectory(prefix="xrm-bench-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "bench"
        generated = generate_pack(folder, args.entities, args.fields)
        # a pack seen for the first time: parsed and checked from its YAML every run
        first_seen = {**os.environ, "XRM_CACHE_DIR": "off"}
        big = [run_child([str(folder)], first_seen) for _ in range(args.big_runs)]
    result.update(
        {
            "load_500_entities_ms": round(statistics.median(r["load_ms"] for r in big), 1),
            "rss_mb": round(max(_rss_mb(r["rss_kb"]) for r in big), 1),
            "entities": big[0]["entities"],
            "fields": big[0]["fields"],
            "option_sets": big[0]["option_sets"],
            "views": big[0]["views"],
        }
    )
    assert result["fields"] == generated["fields"], "the catalog lost fields"
    result["targets"] = TARGETS
    result["ok"] = all(result[key] <= limit for key, limit in TARGETS.items())
    return result


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(main(sys.argv[1:]), indent=2))

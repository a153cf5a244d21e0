"""The distribution as users get it: a wheel built from this tree, installed into a fresh
virtualenv, sets the platform up with the shipped packs; and a third-party pack,
published as a distribution with an ``xrm.solutions`` entry point, installs by name.

Nothing is downloaded: wheels are built without build isolation (the test environment's
setuptools) and installed with ``--no-index --no-deps``; the fresh virtualenv reaches the
platform's dependencies through a ``.pth`` line naming the test environment's
site-packages.  A ``.pth`` line adds a folder without processing the ``.pth`` files in it,
so the editable install of this source tree stays out and ``xrm`` is the wheel's copy.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import CORE_VERSION, ROOT, fresh_database

BUILD_TIMEOUT = 180


def run(command: list, **options) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        **options,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(source: Path, out: Path) -> Path:
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--quiet", "--wheel-dir", out, source]
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def install(venv: Path, wheel: Path) -> None:
    run(
        [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"]
        + ["--quiet", "--no-deps", "--no-index", wheel]
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the xrm wheel of this tree installed."""
    base = tmp_path_factory.mktemp("packaging")
    # Built from a copy, so the build's own folders never land in the shared source tree.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "xrm", source / "xrm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    wheel = build_wheel(source, base / "wheels")
    folder = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", folder])
    purelib = run(
        [folder / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    ).stdout.strip()
    dependencies = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "xrm_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    install(folder, wheel)
    return folder


@pytest.fixture
def environment(tmp_path):
    """Where the installed command runs: a database of the test's own and a working folder
    outside the source tree, with no search path pointing back into it."""
    with fresh_database(tmp_path) as database:
        url = database.url
        options = database.engine_options.get("connect_args", {}).get("options")
        if options:  # a PostgreSQL schema of its own, named in the URL for the child process
            url = f"{url}?options={quote(options)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XRM_", "PYTHON"))}
        work = tmp_path / "work"
        work.mkdir()
        yield {
            "env": {**env, "XRM_DATABASE_URL": url, "XRM_INSTANCE_PATH": str(work)},
            "cwd": work,
        }


def test_the_wheel_sets_up_the_platform_with_its_shipped_packs(venv, environment):
    where = run(
        [
            venv / "bin" / "python",
            "-c",
            "import json, xrm; from xrm.metadata import discover; "
            "print(json.dumps([xrm.__file__, {k: str(v) for k, v in discover().items()}]))",
        ],
        **environment,
    )
    module, packs = json.loads(where.stdout)
    assert Path(module).is_relative_to(venv)  # the wheel's copy, not this source tree
    shipped = Path(__file__).resolve().parents[1] / "xrm" / "solutions" / "packs"
    assert set(packs) == {f.parent.name for f in shipped.glob("*/solution.yaml")}
    assert {"core", "sales", "service", "marketing", "partner"} <= set(packs)
    assert all(Path(folder).is_relative_to(venv) for folder in packs.values())

    setup = run([venv / "bin" / "xrm", "setup", "--demo", "--demo-size", "3"], **environment)
    assert "solutions core, sales" in setup.stdout
    assert "sample data: " in setup.stdout


PACK_PROJECT = """\
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "xrm-clinic"
version = "1.0.0"

[project.entry-points."xrm.solutions"]
clinic = "xrm_clinic"

[tool.setuptools]
packages = ["xrm_clinic"]

[tool.setuptools.package-data]
xrm_clinic = ["*.yaml", "**/*.yaml"]
"""

PACK_FILES = {
    "xrm_clinic/__init__.py": '"""The clinic pack: its folder is this package\'s."""\n',
    "xrm_clinic/solution.yaml": """\
        solution: clinic
        version: 0.3.0
        depends: {core: ">=1.0,<2"}
        """,
    "xrm_clinic/entities/patient.yaml": """\
        entity: patient
        label: {en: Patient}
        title: last_name
        fields:
          last_name: {type: text, required: true, max_length: 100}
          account: {type: lookup, to: account}
        """,
}


def test_a_third_party_pack_installs_by_name_from_its_entry_point(venv, environment, tmp_path):
    project = tmp_path / "xrm-clinic"
    for relative, text in {"pyproject.toml": PACK_PROJECT, **PACK_FILES}.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    install(venv, build_wheel(project, tmp_path / "wheels"))
    shutil.rmtree(project)  # only the installed copy is left to be found

    installed = run([venv / "bin" / "xrm", "solution", "install", "clinic"], **environment).stdout
    assert f"installed core {CORE_VERSION}, clinic 0.3.0" in installed  # its dependency came along
    assert "+ table patient" in installed.splitlines()

"""A third-party pack shipped as a Python distribution: built into a wheel with its YAML as
package data, installed with pip into a folder of its own, then found through the
``xrm.solutions`` entry point and installed by name like a shipped pack — in a separate
process, so the test's own environment is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import CORE_VERSION

import xrm

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "xrm-clinic"
version = "0.1.0"

[project.entry-points."xrm.solutions"]
clinic = "xrm_clinic"

[tool.setuptools]
packages = ["xrm_clinic"]

[tool.setuptools.package-data]
xrm_clinic = ["*.yaml", "**/*.yaml"]
"""

ENTITY = """
entity: patient
label: {en: Patient, ru: Пациент}
plural: {en: Patients, ru: Пациенты}
title: full_name
fields:
  full_name: {type: text, required: true}
  clinic_account: {type: lookup, to: account, on_delete: set_null}
"""

DATA = """
data: patient
key: full_name
records:
  - {full_name: Reference Patient}
"""


def build(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    package = source / "xrm_clinic"
    (package / "entities").mkdir(parents=True)
    (package / "data").mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text('"""The clinic pack for xrm."""\n')
    (package / "solution.yaml").write_text(
        "solution: clinic\nversion: 0.1.0\nlabel: {en: Clinic}\ndepends: {core: '>=1.0'}\n"
    )
    (package / "entities" / "patient.yaml").write_text(ENTITY)
    (package / "data" / "patients.yaml").write_text(DATA)
    wheels = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
    )
    (wheel,) = wheels.glob("xrm_clinic-0.1.0-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return site


def test_a_pack_installed_as_a_distribution_is_found_and_installed_by_name(tmp_path):
    site = build(tmp_path)
    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    run = [
        sys.executable,
        "-c",
        "import sys; from xrm.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    done = subprocess.run(
        [*run, "solution", "install", "clinic", "--database", url],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"installed core {CORE_VERSION}, clinic 0.1.0" in done.stdout
    store = xrm.open(url)
    try:
        catalog = store.refresh()
        assert catalog.solutions["clinic"].version == "0.1.0"
        assert "clinic_account" in catalog.entity("patient").fields
        rows = store.records("patient").query(fields=["full_name"]).rows
        assert [r["full_name"] for r in rows] == ["Reference Patient"]  # its data/ came too
    finally:
        store.close()
    # Without the distribution on the path, the name is unknown and said so.
    env_without = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    missing = subprocess.run(
        [*run, "solution", "install", "clinic", "--database", url],
        env=env_without,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "unknown solution 'clinic'" in missing.stderr

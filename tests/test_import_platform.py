"""The platform package must not shadow Python's ``platform`` module (DESIGN.md section 3).

Run from the repository root, where a local ``platform/`` folder would win the import and
break every library that calls ``platform.system()`` (SQLAlchemy among them).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
sys.path.insert(0, os.getcwd())  # as `python -m ...` or a script in the checkout would
import xrm, xrm.metadata, sqlalchemy, platform
print(platform.system())
print(platform.__file__)
print(xrm.__file__)
"""


def test_platform_module_is_not_shadowed():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    system, platform_file, xrm_file = result.stdout.splitlines()
    assert system in ("Linux", "Darwin", "Windows")
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(platform_file).resolve().is_relative_to(stdlib)
    assert Path(xrm_file).resolve().is_relative_to(ROOT / "xrm")


def test_no_top_level_platform_package():
    assert not (ROOT / "platform").exists()
    assert not (ROOT / "platform.py").exists()

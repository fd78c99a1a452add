"""Install an example plugin package from docs/examples as a user would, offline, into a
temporary target directory; the environment of a subprocess that sees it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]


def setuptools_builds_wheels() -> bool:
    """setuptools builds wheels by itself from 70.1 on; before that it needs ``wheel``."""
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def install(package: Path, module: str, tmp: Path) -> dict[str, str]:
    """pip-install ``package`` into ``tmp``/site (skips when it cannot be built offline);
    the environment of a subprocess that imports it and femopt."""
    src = tmp / "src"
    # build from a copy: an in-tree build would leave build/ and *.egg-info in docs/
    shutil.copytree(package, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                 "__pycache__"))
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
           "--disable-pip-version-check", "--target", str(site), str(src)]
    if setuptools_builds_wheels():
        cmd[4:4] = ["--no-build-isolation", "--no-index"]  # offline
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 and not setuptools_builds_wheels():
        pytest.skip("cannot build the example package: this setuptools "
                    f"({setuptools.__version__}) needs the 'wheel' package and no package "
                    f"index was reachable for an isolated build:\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / module / "__init__.py").is_file()
    env = dict(os.environ)
    paths = [str(site), str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("FEMOPT_DEVICE", None)
    return env


def femopt(env: dict[str, str], *args: str, cwd: Path | None = None):
    """``femopt ARGS`` in a subprocess with ``env``."""
    return subprocess.run([sys.executable, "-m", "femopt.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=300)

"""TuneLab installed as a package (not editable, as in the Docker image): the wheel holds
the sample datasets and the C kernels, and the installed package finds them through
itself and keeps its home out of site-packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from backend.data.samples import sample_files
from backend.settings import PROJECT_ROOT

SHIPPED_DATA = ["backend/training/cpu/kernels.c",
                *(f"backend/data/sample_datasets/{p.name}" for p in sample_files())]
INSTALLED = """
import json, backend.settings, backend.data.samples
print(json.dumps({"module": backend.settings.__file__,
                  "home": str(backend.settings.Settings().home),
                  "samples": [str(p) for p in backend.data.samples.sample_files()]}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds, from a copy of the sources (the build leaves the checkout alone)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    for package in ("backend", "ui"):
        shutil.copytree(PROJECT_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    [path] = (tmp / "dist").glob("tunelab-*.whl")
    return path


def test_the_wheel_holds_the_samples_and_the_c_kernels(wheel):
    assert len(SHIPPED_DATA) > 1
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in SHIPPED_DATA if name not in names] == []


def test_installed_it_finds_its_samples_and_keeps_its_home_out_of_site_packages(wheel, tmp_path):
    site = tmp_path / "site-packages"
    installed = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install",
                                "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELAB_")}
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path / "user"))
    run = subprocess.run([sys.executable, "-c", INSTALLED], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout)
    assert Path(found["module"]).is_relative_to(site)  # the installed copy, not the checkout
    assert found["home"] == str(tmp_path / "user" / ".tunelab")
    assert [Path(p).name for p in found["samples"]] == [p.name for p in sample_files()]
    assert all(Path(p).is_relative_to(site) for p in found["samples"])
    assert (site / "backend" / "training" / "cpu" / "kernels.c").is_file()

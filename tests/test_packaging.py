"""Packaging checks: npe2 manifest, metadata, bundled files, scripts, torch-free start-up."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "napari_sciz"
SAMPLES = PACKAGE / "samples"


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(PACKAGE / "napari.yaml")


# --- manifest -----------------------------------------------------------------------------------


def test_manifest_validates_and_imports(manifest) -> None:
    from npe2 import PluginManifest

    PluginManifest.model_validate(manifest.model_dump())
    manifest.validate_imports()  # every python_name resolves


def test_manifest_fields(manifest) -> None:
    from npe2.manifest.schema import Category

    assert manifest.name == "napari-sciz"
    assert manifest.display_name == "napari-sciz"
    assert manifest.visibility == "public"
    allowed = {c.value for c in Category}
    assert manifest.categories and set(manifest.categories) <= allowed
    commands = manifest.contributions.commands
    assert all(c.id.startswith("napari-sciz.") for c in commands)
    by_python = {c.python_name: c.id for c in commands}
    for name in (
        "napari_sciz._reader:napari_get_reader",
        "napari_sciz._writer:write_sciz",
        "napari_sciz._widgets:CompressWidget",
    ):
        assert name in by_python

    (reader,) = manifest.contributions.readers
    assert reader.filename_patterns == ["*.sciz"]
    assert reader.command == by_python["napari_sciz._reader:napari_get_reader"]

    image, labels = manifest.contributions.writers
    assert [str(t) for t in image.layer_types] == ["image"]
    assert [str(t) for t in labels.layer_types] == ["labels"]
    assert labels.command == by_python["napari_sciz._writer:write_sciz_labels"]
    assert image.filename_extensions == labels.filename_extensions == [".sciz"]

    widgets = {w.display_name: w.command for w in manifest.contributions.widgets}
    assert widgets["Compress (INR)"] == by_python["napari_sciz._widgets:CompressWidget"]
    assert len(manifest.contributions.sample_data) >= 2


def test_root_manifest_is_the_package_manifest() -> None:
    root = ROOT / "napari.yaml"
    assert root.is_symlink(), "the repository-root napari.yaml must be a symlink"
    assert root.resolve() == (PACKAGE / "napari.yaml").resolve()


def test_installed_distribution_finds_manifest() -> None:
    """The entry point and npe2 discovery work for the installed (editable) package."""
    from npe2 import PluginManifest

    eps = {ep.name: ep.value for ep in entry_points(group="napari.manifest")}
    assert eps.get("napari-sciz") == "napari_sciz:napari.yaml"
    assert files("napari_sciz").joinpath("napari.yaml").is_file()
    assert PluginManifest.from_distribution("napari-sciz").name == "napari-sciz"


# --- pyproject / README / LICENSE ----------------------------------------------------------------


def test_pyproject_hub_metadata(pyproject: dict) -> None:
    project = pyproject["project"]
    assert project["name"] == "napari-sciz"
    assert "Framework :: napari" in project["classifiers"]
    assert project["license"] == "BSD-3-Clause"
    assert project["readme"] == "README.md"
    assert {"Source Code", "Bug Tracker"} <= set(project["urls"])
    assert project["entry-points"]["napari.manifest"] == {"napari-sciz": "napari_sciz:napari.yaml"}
    package_data = pyproject["tool"]["setuptools"]["package-data"]["napari_sciz"]
    assert "napari.yaml" in package_data
    assert any(p.startswith("samples/") and p.endswith(".tif") for p in package_data)
    assert any(p.startswith("samples/") and p.endswith(".md") for p in package_data)
    # the extras the set-up scripts install exist
    assert {"pyqt5", "testing", "bench", "dask"} <= set(project["optional-dependencies"])


def test_license_is_bsd3() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, napari-sciz developers" in text
    assert "Neither the name of the copyright holder" in text


def test_readme_images_are_absolute_and_setup_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text) + re.findall(
        r"<img[^>]+src=[\"']([^\"']+)", text
    )
    assert images, "README should show a screenshot"
    assert all(src.startswith("https://") for src in images), images
    assert any(src.endswith("docs/images/side_by_side.png") for src in images)
    # exactly two set-up commands: the demo and the tests
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    commands = [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    shell = [c for c in commands if re.match(r"(bash|sh|pip|python3?|sudo|apt(-get)?) ", c)]
    assert shell == ["bash scripts/demo.sh", "bash scripts/test.sh"]


# --- scripts -------------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    assert ci.stat().st_mode & stat.S_IXUSR
    body = [
        line.strip()
        for line in ci.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert any("bash scripts/test.sh" in line for line in body)


@pytest.mark.parametrize("script", ["_setup.sh", "test.sh", "demo.sh"])
def test_scripts_are_valid_bash(script: str) -> None:
    path = ROOT / "scripts" / script
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_test_script_pins_cpu_torch_first_and_fails_on_errors() -> None:
    setup = (ROOT / "scripts" / "_setup.sh").read_text(encoding="utf-8")
    test = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "set -euo pipefail" in setup
    assert "torch==2.13.0" in setup
    for needle in ("ruff", 'npe2" validate --imports napari-sciz', "xvfb", "pytest"):
        assert needle in test or needle in setup, needle


# --- bundled samples -----------------------------------------------------------------------------


def test_samples_small_and_attributed() -> None:
    tifs = sorted(SAMPLES.glob("*.tif"))
    assert len(tifs) >= 2
    assert sum(p.stat().st_size for p in tifs) < 3 * 2**20
    attribution = (SAMPLES / "ATTRIBUTION.md").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "samples.md").read_text(encoding="utf-8")
    for tif in tifs:
        assert tif.name in attribution
    assert "BSD-2-Clause" in attribution and "public domain" in attribution
    assert "cells3d_nuclei" in docs and "ct_phantom" in docs


# --- start-up stays light ------------------------------------------------------------------------


def test_plugin_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import napari_sciz, napari_sciz._reader, napari_sciz._writer\n"
        "import napari_sciz._sample_data, napari_sciz._settings, napari_sciz._widgets\n"
        "from napari_sciz._widgets import CompressWidget\n"
        "from napari_sciz._reader import napari_get_reader\n"
        "assert napari_get_reader('x.sciz') is not None\n"
        "bad = [m for m in ('torch',) if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr

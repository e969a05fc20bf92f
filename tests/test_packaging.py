"""Packaging: pyproject.toml's dependency lists are the pins of the requirements files that scripts/setup.sh installs."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_runtime_and_test_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == _pins("requirements.txt")
    assert project["optional-dependencies"]["test"] == _pins("requirements-test.txt")
    assert all("==" in p for p in project["dependencies"] + project["optional-dependencies"]["test"])
    assert "torch==2.13.0" in project["dependencies"]


def test_test_only_packages_are_not_runtime_dependencies():
    runtime = {p.split("==")[0].lower() for p in _pins("requirements.txt")}
    assert not runtime & {"pytest", "selenium", "kaldi-native-fbank", "ftfy", "iopath"}


def test_setup_installs_both_requirement_files():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-r requirements.txt -r requirements-test.txt" in setup
    assert "requirements-test.txt" in setup.split("sha256sum")[0]  # a change to either file re-runs the install

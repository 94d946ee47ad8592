"""The server's packages are pinned in both environment files, and the optional router extra
is installed where a wheel exists without failing the setup where none does."""

from __future__ import annotations

import importlib.util
import tomllib

from tests.conftest import ROOT


def _course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    return course


def test_server_packages_are_pinned_and_the_router_is_an_optional_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    for pkg in ("fastapi==", "uvicorn==", "prometheus-client=="):
        assert any(d.startswith(pkg) for d in deps), pkg
    extras = project["optional-dependencies"]
    assert any(d.startswith("openai==") for d in extras["dev"])
    assert extras["router"] == ["sglang-router==0.3.2"]
    assert "router" not in _course().EXTRAS.split(",")
    assert "router" in _course().OPTIONAL_EXTRAS


def test_a_missing_router_wheel_does_not_fail_the_setup(monkeypatch, capsys):
    course = _course()
    calls = []

    def pip(cmd, **kw):
        calls.append([str(c) for c in cmd])
        return 1                                   # "no matching distribution"

    monkeypatch.setattr(course, "run", pip)
    assert course.install_optional(["pip", "install"], "router") is False
    assert calls == [["pip", "install", "sglang-router==0.3.2"]]
    out = capsys.readouterr().out
    assert "could not be installed" in out and "sglang-router" in out and "skipped" in out
    monkeypatch.setattr(course, "run", lambda cmd, **kw: 0)
    assert course.install_optional(["pip", "install"], "router") is True

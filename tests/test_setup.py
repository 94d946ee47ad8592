"""The two README commands: pinned dependencies agree, setup is idempotent, the lab serves."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest

from tests.conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[=<>!;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_yml_pip_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = [line.strip()[2:] for line in lines[start + 1 :] if line.strip().startswith("- ")]
    return {_name(r): r.replace(" ", "") for r in reqs if not r.startswith("-e")}


def test_environment_yml_lists_the_same_pinned_packages_as_pyproject():
    assert _environment_yml_pip_requirements() == _pyproject_requirements()


def test_environment_yml_brings_the_dot_binary_from_conda_forge():
    text = (ROOT / "environment.yml").read_text()
    assert "conda-forge" in text
    assert re.search(r"^\s+- graphviz\s*$", text, re.M), "conda graphviz (the dot binary) missing"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["python3 course.py lab", "python3 course.py test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 course.py test" in ci.splitlines()[-1]


def test_second_setup_skips_installation():
    out = subprocess.run(
        [sys.executable, "course.py", "setup"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already installed" in out.stdout
    assert "pip" not in out.stdout


def test_missing_dot_is_explained(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("course", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    monkeypatch.setattr(course.shutil, "which", lambda name: None)
    course.ensure_dot()
    out = capsys.readouterr().out
    assert "dot` is still missing" in out and "matplotlib" in out and "conda" in out


def _course_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("course", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    return course


def test_trusting_the_notebooks_is_idempotent_and_cheap_the_second_time(tmp_path, monkeypatch,
                                                                         capfd):
    course = _course_module()
    monkeypatch.setattr(course, "PY", sys.executable)  # this venv: no installation here
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    n = len(list((ROOT / "notebooks").glob("*.ipynb")))
    assert course.trust_notebooks() == 0
    assert f"{n} of {n} notebooks newly trusted" in capfd.readouterr().out
    start = time.perf_counter()
    assert course.trust_notebooks() == 0
    assert f"0 of {n} notebooks newly trusted" in capfd.readouterr().out
    assert time.perf_counter() - start < 30

    import nbformat
    from nbformat.sign import NotebookNotary

    nb = nbformat.read(ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)
    assert NotebookNotary(data_dir=str(tmp_path)).check_signature(nb)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return resp.status, resp.read()


@pytest.mark.skipif(os.name == "nt", reason="posix process handling")
def test_lab_command_serves_the_notebooks(tmp_path):
    port, token = _free_port(), "radixlab-test"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path),
           "JUPYTER_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "course.py", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                status, body = _get(f"{base}/lab?token={token}")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    log = proc.stdout.read().decode() if proc.poll() is not None else ""
                    pytest.fail(f"JupyterLab did not start:\n{log[-2000:]}")
                time.sleep(0.5)
        assert status == 200 and b"JupyterLab" in body
        status, body = _get(f"{base}/api/contents?token={token}")
        names = {item["name"] for item in json.loads(body)["content"]}
        assert "00_welcome.ipynb" in names and "01_kv_cache.ipynb" in names
        status, body = _get(f"{base}/api/contents/00_welcome.ipynb?token={token}")
        cells = json.loads(body)["content"]["cells"]
        assert any("radixlab" in "".join(c["source"]) for c in cells)
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(c["metadata"].get("trusted") for c in code), "notebooks not trusted"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)

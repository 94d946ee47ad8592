#!/usr/bin/env python3
"""One entry point for the course: `python3 course.py lab` or `python3 course.py test`.

Both create `.venv` if it is missing, install the pinned dependencies (skipped when nothing
changed since the last install), make sure graphviz's `dot` binary is present, then either open
JupyterLab on notebooks/ or run the whole test suite including `pytest --nbval`.
Needs nothing but Python 3.11.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".radixlab-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
EXTRAS = "triton,lab,dev"
OPTIONAL_EXTRAS = ("router",)   # binary wheels that may not exist for every platform


def say(msg: str) -> None:
    print(f"[course] {msg}", flush=True)


def run(cmd: list[str], **kw) -> int:
    say(" ".join(str(c) for c in cmd))
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def install_fingerprint() -> str:
    """What the installed environment depends on: the project file and the interpreter."""
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def ensure_venv() -> None:
    if not PY.exists():
        say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    want = install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == want:
        say("dependencies already installed (delete .venv to reinstall)")
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check"]
    # torch first and on its own, pinned, so nothing else can pull in a different build.
    if run([*pip, "torch==2.13.0"]) != 0:
        sys.exit("[course] installing torch==2.13.0 failed; see the pip output above")
    if run([*pip, "-e", f".[{EXTRAS}]"]) != 0:
        sys.exit("[course] installing the course package failed; see the pip output above")
    for extra in OPTIONAL_EXTRAS:
        install_optional(pip, extra)
    STAMP.write_text(want)


def install_optional(pip: list, extra: str) -> bool:
    """Install an optional extra's pinned packages; where that fails (no wheel for this
    platform), say so and go on: only the features that need it are missing."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["optional-dependencies"][extra]
    if run([*pip, *reqs]) == 0:
        return True
    say(
        f"the optional '{extra}' extra ({', '.join(reqs)}) could not be installed on this\n"
        f"         platform (no wheel for it?). Everything else works; the features and\n"
        f"         tests that need it are skipped (`radixlab cluster` needs sglang-router)."
    )
    return False


def ensure_dot() -> None:
    """Install graphviz's `dot` with the system package manager when possible, else explain."""
    if shutil.which("dot"):
        return
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    sudo = [] if is_root else (["sudo", "-n"] if shutil.which("sudo") else None)
    if shutil.which("apt-get") and sudo is not None:
        say("graphviz `dot` not found; installing it with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run([*sudo, "apt-get", "update", "-qq"], env=env)
        run([*sudo, "apt-get", "install", "-y", "-qq", "graphviz"], env=env)
    elif shutil.which("brew"):
        run(["brew", "install", "graphviz"])
    if not shutil.which("dot"):
        say(
            "graphviz `dot` is still missing: tree pictures will fall back to matplotlib.\n"
            "         Install it with `apt-get install graphviz`, `brew install graphviz` or\n"
            "         `conda install -c conda-forge graphviz` for the nicer drawings."
        )


def lab(args: list[str]) -> int:
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return run([BIN / "jupyter", "lab", "--notebook-dir", ROOT / "notebooks", *root, *args])


def test(args: list[str]) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    rc = run([PY, "-m", "ruff", "check", "radixlab", "tests", "bench", "scripts", "course.py"])
    if rc != 0:
        return rc
    return run(
        [
            PY, "-m", "pytest", "tests", "notebooks",
            "--nbval", "--nbval-current-env",
            "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
            *args,
        ],
        env=env,
    )


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - the learner may run an older python3
        sys.exit(f"[course] Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if len(sys.argv) < 2 or sys.argv[1] not in {"lab", "test", "setup"}:
        print(__doc__)
        print("usage: python3 course.py {lab|test|setup} [extra arguments]")
        return 2
    cmd, rest = sys.argv[1], sys.argv[2:]
    ensure_venv()
    ensure_dot()
    if cmd == "setup":
        return 0
    return lab(rest) if cmd == "lab" else test(rest)


if __name__ == "__main__":
    sys.exit(main())

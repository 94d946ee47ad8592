"""`radixlab replay` against misbehaving loopback servers: --timeout, --api-key, exit status."""

from __future__ import annotations

import time

import pytest

from radixlab.__main__ import main
from tests import misbehaving_server as ms

ARGS = ["replay", "--tokenizer", "bytes", "--workload", "few-shot", "--requests", "3"]


@pytest.fixture
def serve():
    with ms.servers() as start:
        yield start


def run(capsys, *argv):
    rc = main([*ARGS, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_api_key_flag_and_env_var_go_on_every_request(serve, capsys, monkeypatch):
    s = serve(ms.ok)
    rc, out, _ = run(capsys, "--url", s.url, "--api-key", "sk-flag")
    assert rc == 0 and out.splitlines()[-1].startswith("total")
    assert [x["headers"].get("Authorization") for x in s.seen] == ["Bearer sk-flag"] * 4
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    n = len(s.seen)
    assert run(capsys, "--url", s.url)[0] == 0
    assert {x["headers"].get("Authorization") for x in s.seen[n:]} == {"Bearer sk-env"}
    monkeypatch.setenv("OPENAI_API_KEY", "")
    n = len(s.seen)
    assert run(capsys, "--url", s.url, "--model", "m")[0] == 0
    assert all("Authorization" not in x["headers"] for x in s.seen[n:])


def test_timeout_cuts_a_trickling_server_and_failures_set_the_exit_status(serve, capsys):
    s = serve(ms.by_index(r1=ms.trickle_body))
    t0 = time.monotonic()
    rc, out, _ = run(capsys, "--url", s.url, "--model", "m", "--timeout", "1.5")
    assert time.monotonic() - t0 < 4.5      # the trickle would take ms.LIMIT_S (5 s) or more
    assert rc == 1
    assert "1 of 3 requests failed" in out and f"{s.url} request 1 (rid 1)" in out
    assert "1.5 s deadline" in out


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", "100000"])
def test_bad_timeout_is_an_argument_error(capsys, value):
    with pytest.raises(SystemExit) as e:
        main([*ARGS, "--fake", "--timeout", value])
    assert e.value.code == 2
    assert f"--timeout: {value!r}" in capsys.readouterr().err


def test_a_refusing_server_stops_with_the_partial_table(serve, capsys):
    s = serve(ms.by_index(r1=ms.status(401, {"error": {"message": "invalid key"}})))
    rc, out, err = run(capsys, "--url", s.url, "--model", "m")
    assert rc == 1
    assert "the replay stopped" in out and out.count("failed") == 0
    assert f"{s.url} request 1 (rid 1): HTTP 401 Unauthorized: invalid key" in err
    assert "Traceback" not in out + err
    assert s.posts == 2


def test_bad_url_and_concurrency_are_clear_errors(capsys):
    rc, _, err = run(capsys, "--url", "ftp://x", "--model", "m")
    assert rc == 2 and "base_url must be an http(s) URL" in err and "'ftp://x'" in err
    rc, _, err = run(capsys, "--fake", "--concurrency", "5000")
    assert rc == 2 and "concurrency" in err and "5000" in err

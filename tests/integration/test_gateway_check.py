"""``sidecar-gateway check`` and refused ``run`` (gateway-config.md "Command line"): exit 0 without ERROR,
1 with ERROR lines (YAML path + message) on stdout, 2 when the file cannot be read or parsed; ``run`` refuses
an invalid file with exit 1 and the same lines on stderr."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.gateway_proc import config, endpoint, free_port, run_cli, service, write_yaml


def _valid():
    return config(
        service(
            "svc-c",
            endpoint("ep-c1", "/c1", "http://127.0.0.1:9/x"),
            endpoint("ep-c2", "/c2", "http://127.0.0.1:9/y", methods=["GET"], timeout=5),
        ),
        listen=f"127.0.0.1:{free_port()}",
        admin={"listen": f"127.0.0.1:{free_port()}"},
    )


def _unknown_key():
    cfg = _valid()
    cfg["services"][0]["endpoints"][0]["bogus_key"] = 1
    return cfg


def _bad_url():
    cfg = _valid()
    cfg["services"][0]["endpoints"][1]["target"] = "not a url"
    return cfg


def _both():
    cfg = _bad_url()
    cfg["services"][0]["endpoints"][0]["bogus_key"] = 1
    return cfg


def _unknown_top_level():
    cfg = _valid()
    cfg["listne"] = "127.0.0.1:1"
    return cfg


def _duplicate_id():
    cfg = _valid()
    cfg["services"].append(service("svc-d", endpoint("ep-c1", "/d", "http://127.0.0.1:9/d")))
    return cfg


FILES = {
    "valid": _valid,
    "unknown_key": _unknown_key,
    "bad_url": _bad_url,
    "both": _both,
    "unknown_top_level": _unknown_top_level,
    "duplicate_id": _duplicate_id,
    "unparseable": lambda: "services: [\n  - id: 'x'\n    endpoints: {{{\n",
}

UNKNOWN_KEY_LINE = re.compile(r"^ERROR\s+services\[0\]\.endpoints\[0\]\S*:.*", re.M)
BAD_URL_LINE = re.compile(r"^ERROR\s+services\[0\]\.endpoints\[1\]\.target: Invalid URL", re.M)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run(command, name) -> CompletedProcess of ``python -m sidecar_gateway COMMAND <file name>`` (cached)."""
    d: Path = tmp_path_factory.mktemp("check")
    cache: dict[tuple[str, str], object] = {}

    def _run(command: str, name: str):
        if (command, name) not in cache:
            path = d / f"{name}.yaml"
            if name in FILES:
                write_yaml(path, FILES[name]())
            cache[(command, name)] = run_cli(command, str(path), timeout=30)
        return cache[(command, name)]

    return _run


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR")]


def test_check_valid_file_exits_0(run):
    """check on a valid file exits 0."""
    res = run("check", "valid")
    assert res.returncode == 0, res.stdout + res.stderr


def test_check_valid_file_prints_no_error_line(run):
    """check on a valid file prints no ERROR line."""
    assert error_lines(run("check", "valid").stdout) == []


@pytest.mark.parametrize("name", ["unknown_key", "bad_url", "both", "unknown_top_level", "duplicate_id"])
def test_check_invalid_file_exits_1(run, name):
    """check exits 1 when the file has an ERROR."""
    res = run("check", name)
    assert res.returncode == 1, res.stdout + res.stderr


def test_check_reports_unknown_endpoint_key_at_its_yaml_path(run):
    """An unknown endpoint key is an ERROR line naming services[0].endpoints[0] and the key."""
    lines = [m.group(0) for m in UNKNOWN_KEY_LINE.finditer(run("check", "unknown_key").stdout)]
    assert any("bogus_key" in line for line in lines), run("check", "unknown_key").stdout


def test_check_reports_unknown_top_level_key(run):
    """An unknown top-level key (a typo) is an ERROR line naming it."""
    assert any("listne" in line for line in error_lines(run("check", "unknown_top_level").stdout))


def test_check_reports_bad_target_url_at_its_yaml_path(run):
    """A bad target is reported as ERROR services[0].endpoints[1].target: Invalid URL."""
    assert BAD_URL_LINE.search(run("check", "bad_url").stdout), run("check", "bad_url").stdout


def test_check_reports_every_problem(run):
    """With two problems in the file, both lines are printed."""
    out = run("check", "both").stdout
    assert BAD_URL_LINE.search(out) and any("bogus_key" in line for line in error_lines(out)), out


def test_check_reports_duplicate_endpoint_id(run):
    """A duplicate endpoint id is an ERROR line naming the id."""
    assert any("ep-c1" in line or ".id" in line for line in error_lines(run("check", "duplicate_id").stdout))


@pytest.mark.parametrize("name", ["unknown_key", "bad_url", "duplicate_id", "unparseable", "missing"])
def test_check_invalid_file_does_not_crash(run, name):
    """Problems are reported, never as a traceback."""
    assert "Traceback" not in run("check", name).stderr


@pytest.mark.parametrize("name", ["missing", "unparseable"])
def test_check_unreadable_or_unparseable_file_exits_2(run, name):
    """check exits 2 for a file that does not exist or is not YAML."""
    res = run("check", name)
    assert res.returncode == 2, res.stdout + res.stderr


def test_run_refuses_invalid_file_with_exit_1(run):
    """run on a file with an ERROR does not start and exits 1."""
    res = run("run", "bad_url")
    assert res.returncode == 1, res.stdout + res.stderr


def test_run_writes_problem_lines_to_stderr(run):
    """run prints the same problem lines as check, on standard error."""
    assert BAD_URL_LINE.search(run("run", "bad_url").stderr), run("run", "bad_url").stderr


@pytest.mark.parametrize("name", ["missing", "unparseable"])
def test_run_unreadable_file_exits_2(run, name):
    """run exits 2 for a file that does not exist or is not YAML."""
    res = run("run", name)
    assert res.returncode == 2, res.stdout + res.stderr


def test_console_script_check_accepts_valid_file(tmp_path):
    """The installed console script ``sidecar-gateway check`` exits 0 on a valid file."""
    script = shutil.which("sidecar-gateway") or str(Path(sys.executable).with_name("sidecar-gateway"))
    path = tmp_path / "valid.yaml"
    write_yaml(path, _valid())
    res = subprocess.run([script, "check", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr

"""Start the local Lambda runner (``python -m sidecar_gateway.localrunner``) for a test, and stop it for good.

Usage (``tests/conftest.py`` puts ``tests/`` on ``sys.path``)::

    from support.lambda_runner import FUNCTIONS_DIR, run_lambda_runner

    @pytest.fixture(scope="module")
    def lambda_runner(tmp_path_factory):
        with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path_factory.mktemp("runner")) as runner:
            yield runner

    def test_something(lambda_runner):
        client = lambda_runner.lambda_client()          # boto3, endpoint_url=runner.url, no retries
        ...  # or point the gateway at it: AWS_ENDPOINT_URL_LAMBDA=lambda_runner.url
        assert lambda_runner.invocations()[-1]["access_key"].startswith("ASIA")

The runner runs in its own subprocess on a free loopback port (``--listen 127.0.0.1:0``; the URL is read from its
ready line), logging to ``<log_dir>/lambda-runner.log`` (``runner.logs()``).  ``stop()`` (called at exit of the
context) sends SIGTERM, whose graceful shutdown kills every runtime process group; then it SIGKILLs whatever
is left: the runner's own group, and the process group of every execution environment it ever reported.

Introspection (``GET /_runner/invocations``) records, per Invoke request, ``request_id``, ``function``,
``qualifier``, ``function_name`` (decoded path segment), ``raw_path``, ``invocation_type``, ``access_key``,
``has_security_token``, ``signature_verified``, ``payload`` (JSON value, or text when not JSON), ``status`` and
``function_error`` (``None`` while the call runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
# Credentials the tests sign with; the runner verifies them when started with ``credentials=TEST_CREDENTIALS``.
TEST_ACCESS_KEY = "AKIALOCALRUNNERTEST1"
TEST_SECRET_KEY = "local-runner-test-secret"
TEST_CREDENTIALS: Mapping[str, str] = {TEST_ACCESS_KEY: TEST_SECRET_KEY}
TEST_REGION = "eu-west-1"
# Interpreter start-up plus aiohttp import is well under a second; the margin is for a loaded 2-core CI machine.
STARTUP_TIMEOUT_S = 20.0
# SIGTERM → runtimes killed → listeners closed takes well under a second; then we SIGKILL.
STOP_TIMEOUT_S = 10.0
INTROSPECTION_TIMEOUT_S = 5.0
_READY_RE = re.compile(r"Local Lambda runner listening on (http://\S+)")


@dataclass
class LambdaRunner:
    """A running local Lambda runner: ``url`` is the Lambda ``endpoint_url``."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    region: str
    _environment_pids: set[int] = field(default_factory=set)

    # -- introspection ---------------------------------------------------------------------------------------------

    def invocations(self) -> list[dict[str, Any]]:
        """Every Invoke request so far (oldest first), see the module docstring."""
        return self._get("/_runner/invocations")

    def clear_invocations(self) -> None:
        request = urllib.request.Request(self.url + "/_runner/invocations", method="DELETE")
        with _opener().open(request, timeout=INTROSPECTION_TIMEOUT_S):
            pass

    def environments(self) -> list[dict[str, Any]]:
        """Live execution environments: ``function``, ``pid``, ``state``, ``invocations``, ``runtime_api_port``."""
        environments = self._get("/_runner/environments")
        self._environment_pids.update(env["pid"] for env in environments if env["pid"])
        return environments

    def logs(self) -> str:
        """The runner's output so far (START/END/REPORT lines and function output, prefixed ``[function]``)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def lambda_client(self, *, access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY,
                      session_token: str | None = None, region: str | None = None, read_timeout: float = 30.0) -> Any:
        """A boto3 Lambda client for this runner, with retries disabled (a 429 must surface, not be retried)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "lambda", endpoint_url=self.url, region_name=region or self.region,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=session_token,
            config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=5),
        )

    def _get(self, path: str) -> Any:
        with _opener().open(self.url + path, timeout=INTROSPECTION_TIMEOUT_S) as response:
            return json.loads(response.read())

    # -- shutdown ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful SIGTERM, then SIGKILL the runner's group and every environment's group still alive."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.environments()  # learn the last pids before asking the runner to go
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _killpg(self.process.pid)
                self.process.wait(timeout=STOP_TIMEOUT_S)
        _killpg(self.process.pid)
        for pid in self._environment_pids:
            if _is_runtime(pid):  # a pid the kernel re-used for something else is left alone
                _killpg(pid)


@contextlib.contextmanager
def run_lambda_runner(
    functions_dir: Path = FUNCTIONS_DIR,
    *,
    log_dir: Path | None = None,
    credentials: Mapping[str, str] | None = None,
    region: str = TEST_REGION,
    concurrency: int | None = None,
    timeout: float | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[LambdaRunner]:
    """Start a runner for ``functions_dir`` and yield it; ``credentials`` (key id → secret) turns on SigV4
    verification.  ``concurrency``/``timeout`` set the defaults for functions the manifest does not configure."""
    own_dir = log_dir is None
    workdir = Path(tempfile.mkdtemp(prefix="lambda-runner-")) if log_dir is None else log_dir
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "sidecar_gateway.localrunner", str(functions_dir), "--listen", "127.0.0.1:0",
            "--region", region]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if credentials:
        credentials_path = workdir / "sigv4-credentials.json"
        credentials_path.touch(mode=0o600)
        credentials_path.write_text(json.dumps(dict(credentials)), encoding="utf-8")
        args += ["--sigv4-credentials", str(credentials_path)]
    args += list(extra_args)
    log_path = workdir / "lambda-runner.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, **(env or {})})
    runner = LambdaRunner(url="", process=process, log_path=log_path, region=region)
    try:
        runner.url = _wait_ready(process, log_path)
        yield runner
    finally:
        runner.stop()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        match = _READY_RE.search(log_path.read_text(encoding="utf-8", errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"local Lambda runner exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.02)
    raise RuntimeError(f"local Lambda runner not ready after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}")


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _is_runtime(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"awslambdaric" in cmdline.read()
    except OSError:
        return False


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def process_is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for a reaper that is not us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True

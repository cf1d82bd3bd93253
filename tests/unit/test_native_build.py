"""The native lane's C extension is built by ``pip install`` (setup.py, ``optional=True``).

A machine without a C compiler still gets a working gateway (the Python lane serves every call), so nothing here
fails there; with a compiler (or in CI, where scripts/test.sh installs one) the extension must have been built, or
the suite would silently test the Python lane only."""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import pytest

from sidecar_gateway.native import lane


def test_extension_is_built_where_a_compiler_is() -> None:
    if not (os.environ.get("CI") or shutil.which("gcc") or shutil.which("cc")) and not lane.AVAILABLE:
        pytest.skip("no C compiler at install time: the Python lane serves every call (docs/native-lane.md)")
    assert lane.AVAILABLE, "src/sidecar_gateway/native/_lane.c was not built (pip install -e . with a C compiler)"


@pytest.mark.skipif(not lane.AVAILABLE, reason="native lane not built")
def test_message_ids_are_distinct_canonical_v4_uuids() -> None:
    from sidecar_gateway.native import _lane

    ids = [_lane.message_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    canonical = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(canonical.fullmatch(i) for i in ids)
    for position in (0, 9, 15, 20, 35):  # no stuck digit anywhere
        assert len({i[position] for i in ids}) > 3


@pytest.mark.skipif(not lane.AVAILABLE, reason="native lane not built")
@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 119, 1000, 100_003])
def test_the_signers_sha256_matches_hashlib(size: int) -> None:
    from sidecar_gateway.native import _lane

    data = bytes((i * 7 + size) % 256 for i in range(size))
    assert _lane.sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_switch_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lane.ENV, "0")
    assert not lane.enabled()


@pytest.mark.skipif(not lane.AVAILABLE, reason="native lane not built")
def test_a_forked_worker_does_not_repeat_its_parents_message_ids() -> None:
    """Workers are forked from one parent (--workers N): each re-seeds, so no two share a sequence."""
    from sidecar_gateway.native import _lane

    _lane.message_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids
        os.write(write, "".join(_lane.message_id() for _ in range(50)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    parent = "".join(_lane.message_id() for _ in range(50))
    assert len(child) == len(parent) == 50 * 36
    ids = [{text[i:i + 36] for i in range(0, len(text), 36)} for text in (child, parent)]
    assert not ids[0] & ids[1]

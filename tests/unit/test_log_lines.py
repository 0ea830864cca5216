"""One JSON object per line when many processes log hard into one pipe or one file.

Several processes set up logging as the service's workers do (``bridge.log.setup`` with the
service's lock file in ``BRIDGE_LOG_LOCK_FILE``) and log as fast as they can, a fifth of their
lines longer than 8 KiB (beyond PIPE_BUF, where a pipe no longer keeps writes whole), through
structlog and through stdlib logging. The pipe is read slowly so that it fills and writers block
mid-line, which is when lines from different processes would interleave.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import pytest

from bridge.log import LOCK_FILE_ENV

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 4
LINES = 300
LONG = 20_000  # characters of padding on every fifth line

WRITER = textwrap.dedent(
    """
    import logging, sys
    import structlog
    from bridge import log
    log.setup("info", "json")
    who, lines, long = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    slog = structlog.get_logger("writer")
    stdlib = logging.getLogger("library")
    for i in range(lines):
        pad = ("%s-" % who) * (long // (len(who) + 1)) if i % 5 == 0 else who
        if i % 7 == 0:
            stdlib.warning("stdlib line %s %d %s", who, i, pad)
        else:
            slog.info("line", who=who, i=i, pad=pad)
    """
)


def _start(stderr: int | IO[bytes], tmp_path: Path) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env[LOCK_FILE_ENV] = str(tmp_path / "log.lock")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, f"p{n}", str(LINES), str(LONG)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=REPO,
        )
        for n in range(PROCESSES)
    ]


def _check(text: str) -> None:
    lines = text.split("\n")
    assert lines[-1] == ""  # the output ends with a newline
    per_writer: dict[str, int] = {}
    for line in lines[:-1]:
        event: Any = json.loads(line)  # raises on a broken or joined line
        assert isinstance(event, dict)
        if event["event"] == "line":
            who, pad = event["who"], event["pad"]
        else:
            assert event["logger"] == "library"
            _, _, who, _, pad = event["event"].split(" ", 4)
        expected = ((who + "-") * (LONG // (len(who) + 1))) if len(pad) > len(who) else who
        assert pad == expected  # a long line arrived whole, not cut or spliced
        per_writer[who] = per_writer.get(who, 0) + 1
    assert per_writer == {f"p{n}": LINES for n in range(PROCESSES)}


def test_many_processes_into_one_pipe_read_slowly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    procs = _start(write_end, tmp_path)
    os.close(write_end)
    chunks: list[bytes] = []
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(1024)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunks) % 16 == 0:
                time.sleep(0.001)  # a slow reader: the pipe fills and writers block mid-line
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    _check(b"".join(chunks).decode("utf-8"))


def test_many_processes_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "bridge.log"
    with open(path, "ab") as out:
        procs = _start(out, tmp_path)
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    _check(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("size", [10, 4096, 70_000])
def test_each_line_is_one_write(size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newline travels in the same write(2) as its line, whatever the line's length."""
    from bridge.log import LineWriter

    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: Any) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    with open(tmp_path / "out", "w") as out:
        LineWriter(out, str(tmp_path / "lock")).write_line("x" * size)
    assert writes == [b"x" * size + b"\n"]


def test_a_line_that_cannot_be_written_is_dropped_and_counted() -> None:
    """A closed log stream (its reader gone) must not raise into the call that logged."""
    import io

    from bridge.log import LineWriter

    buffer = io.StringIO()
    to_buffer = LineWriter(buffer)
    buffer.close()
    to_buffer.write_line("lost")
    to_buffer.write_line("lost too")
    assert to_buffer.dropped == 2
    kept = io.StringIO()
    LineWriter(kept).write_line("kept")
    assert kept.getvalue() == "kept\n"

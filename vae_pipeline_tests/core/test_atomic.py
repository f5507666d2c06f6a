"""The atomic writer's leftovers: a killed writer's temporary file goes at the next write, a live writer's stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vae_pipeline.core.atomic import atomic_path

# A writer killed (SIGKILL) with its temporary file half written, as a crashed run leaves it.
KILLED_WRITER = """
import os, signal, sys
from vae_pipeline.core.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""
# A writer that holds its temporary file open until told to finish: a run writing at the same time.
LIVE_WRITER = """
import sys
from vae_pipeline.core.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"theirs")
    print(tmp, flush=True)
    sys.stdin.readline()
"""
DAY_S = 24 * 3600


def _killed_writer_leftover(target: Path) -> Path:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (leftover,) = target.parent.glob(f".{target.name}.*.tmp")
    return leftover


def _write(target: Path, content: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(content)


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


class TestLeftovers:
    def test_a_killed_writers_leftover_goes_at_the_next_write(self, tmp_path: Path) -> None:
        target = tmp_path / "latents" / "v0002.parquet"
        leftover = _killed_writer_leftover(target)
        assert leftover.read_bytes() == b"half" and not target.exists()
        _write(target, b"whole")
        assert target.read_bytes() == b"whole"
        assert sorted(p.name for p in target.parent.iterdir()) == ["v0002.parquet"]

    def test_a_leftover_of_another_target_in_the_folder_goes_too(self, tmp_path: Path) -> None:
        leftover = _killed_writer_leftover(tmp_path / "v0002.parquet")
        _write(tmp_path / "v0003.parquet", b"next")
        assert not leftover.exists()

    def test_a_live_writers_file_stays_while_a_killed_ones_goes(self, tmp_path: Path) -> None:
        target = tmp_path / "summary.json"
        leftover = _killed_writer_leftover(target)
        live = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(target)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            theirs = Path(live.stdout.readline().strip())
            assert theirs.name.startswith(".summary.json.") and theirs.read_bytes() == b"theirs"
            with atomic_path(target) as ours:  # this process is a live writer of the same file as well
                ours.write_bytes(b"ours")
                _write(target, b"a third writer")
                assert ours.read_bytes() == b"ours" and theirs.read_bytes() == b"theirs"
            assert not leftover.exists()
            live.communicate("go\n", timeout=60)
        finally:
            live.kill()
        assert live.returncode == 0 and target.read_bytes() == b"theirs"  # its rename still worked: last writer wins
        assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]

    def test_other_hosts_and_unrelated_files_are_judged_by_age_or_left_alone(self, tmp_path: Path) -> None:
        target = tmp_path / "model.pt"
        # Another machine's pids mean nothing here: its temporary files go only once a day old.
        other_fresh = tmp_path / ".model.pt.otherhost_0123abcd.4242.k3j9x_2a.tmp"
        other_stale = tmp_path / ".model.pt.otherhost_0123abcd.4243.p0q9r8s7.tmp"
        # Named before host and pid were in the name: judged by age, and only beside their own target.
        old_style_stale = tmp_path / ".model.pt.a1b2c3d4.tmp"
        old_style_other_target = tmp_path / ".notes.txt.a1b2c3d4.tmp"
        unrelated = [tmp_path / ".model.pt.tmp", tmp_path / "model.pt.tmp", tmp_path / ".cache.tmp",
                     tmp_path / ".model.pt.swp", tmp_path / "data.csv"]
        for path in [other_fresh, other_stale, old_style_stale, old_style_other_target, *unrelated]:
            path.write_bytes(b"x")
            if path is not other_fresh:
                _age(path, 2 * DAY_S)
        _write(target, b"weights")
        assert not other_stale.exists() and not old_style_stale.exists()
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {"model.pt", other_fresh.name, old_style_other_target.name, *(p.name for p in unrelated)}

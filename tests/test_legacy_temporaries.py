"""The temporaries older d2v versions left when killed: removed once their process is gone, a
checkpoint moved aside put back when its target is missing, anything else left alone."""

import subprocess
import sys

import pytest

from d2v.atomic import _host
from d2v.legacy_temporaries import clean_legacy, clean_temporaries

DEAD = 4194999  # above Linux's pid_max: no such process


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dir(path, content="x"):
    path.mkdir()
    (path / "f").write_text(content)
    return path


def test_legacy_names_are_removed_or_restored(tmp_path, live_pid):
    _dir(tmp_path / "best", "current")
    removed = [
        _dir(tmp_path / f".step-00000008.{DEAD}.tmp"),
        tmp_path / f".latest.{DEAD}.tmp",
        _dir(tmp_path / ".best.k2j4x9_a"),
        _dir(tmp_path / f".best.old-{DEAD}"),
    ]
    (tmp_path / f".latest.{DEAD}.tmp").write_text("step-00000008\n")
    kept = [
        _dir(tmp_path / f".step-00000010.{live_pid}.tmp"),  # a live writer's
        _dir(tmp_path / ".other.k2j4x9_a"),  # not a target of this cleanup
        _dir(tmp_path / ".git"),
        tmp_path / ".best.notes",
    ]
    (tmp_path / ".best.notes").write_text("mine")
    assert sorted(clean_legacy(tmp_path, ["step-*", "latest", "best"])) == sorted(removed)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in removed)
    assert (tmp_path / "best" / "f").read_text() == "current"


def test_a_checkpoint_moved_aside_is_put_back(tmp_path):
    _dir(tmp_path / f".best.old-{DEAD}", "old")  # killed between its two renames: best/ is gone
    _dir(tmp_path / ".best.q8w7e6r5", "new, maybe partial")
    clean_legacy(tmp_path, ["best"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert (tmp_path / "best" / "f").read_text() == "old"


def test_clean_temporaries_covers_todays_names_too(tmp_path, live_pid):
    dead = _dir(tmp_path / f".best.{_host()}-{DEAD}-0a1b2c3d.d2v-tmp")
    live = _dir(tmp_path / f".best.{_host()}-{live_pid}-0a1b2c3d.d2v-tmp")
    legacy = _dir(tmp_path / ".best.abcdefgh")
    assert sorted(clean_temporaries(tmp_path, ["best"])) == sorted([dead, legacy])
    assert live.exists()

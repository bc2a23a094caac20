"""metrics.jsonl: a torn last line is dropped; rewriting the history on resume survives SIGKILL at
any point of the write."""

import json
import os
import signal
import subprocess
import sys
import textwrap

from d2v.training.metrics import MetricsLog, read_metrics

# Dies half-way through writing anything named metrics.jsonl (or its temporary): a SIGKILL while the
# resumed run rewrites its history.
DIE_MID_WRITE = textwrap.dedent("""
    import builtins, io, os, signal, sys
    from d2v.training.metrics import MetricsLog

    real_open = builtins.open

    class Dying:
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
        def __getattr__(self, name):
            return getattr(self.f, name)

    def dying_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Dying(f) if "metrics.jsonl" in str(file) and ("w" in mode or "a" in mode) else f

    builtins.open = io.open = dying_open
    MetricsLog(sys.argv[1], 100, progress=False).truncate_after(50)
""")


def _history(run, n):
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, n + 1)))


def test_torn_last_line_is_dropped(tmp_path):
    _history(tmp_path, 3)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_history_survives_a_kill_while_it_is_rewritten(tmp_path):
    _history(tmp_path, 100)
    proc = subprocess.run([sys.executable, "-c", DIE_MID_WRITE, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 101))

    from d2v.training.checkpointing import clean_run_temporaries

    assert clean_run_temporaries(tmp_path)  # the half-written temporary of the dead process
    MetricsLog(tmp_path, 100, progress=False).truncate_after(50)  # the next resume rewrites it
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 51))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tensorboard") == ["metrics.jsonl"]

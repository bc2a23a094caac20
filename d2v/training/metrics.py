"""Progress and metrics of a run: a tqdm progress bar, `<run>/metrics.jsonl` (one JSON object per
logged step), and TensorBoard event files under `<run>/tensorboard/` when tensorboard is installed.
Only the first process writes.

Records are appended (a kill can only tear the last line, which `read_metrics` drops); the one
rewrite, dropping the records past a resumed run's checkpoint, goes through `d2v.atomic.atomic_write`,
so a kill during it leaves the old history or the new one, never a truncated file.
"""

import json
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from d2v.atomic import atomic_write

__all__ = ["MetricsLog", "read_metrics"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of a metrics.jsonl (a torn last line, from a killed run, is dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


class MetricsLog:
    """A run's metrics log: the progress bar, `metrics.jsonl` and TensorBoard (first process only)."""

    def __init__(self, run_dir: str | Path, total: int, initial: int = 0, enabled: bool = True,
                 progress: bool = True, desc: str = "", unit: str = "step"):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                        disable=not (enabled and progress))
        self.tb = _tensorboard(Path(run_dir)) if enabled else None

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (left by a killed run beyond its last checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (it must hold "step")."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def advance(self, postfix: dict[str, str] | None = None, n: int = 1) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.enabled:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()

"""Resolve a HuggingFace model id ("org/name") to its snapshot in the local HF cache, offline.

The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, in
huggingface_hub's layout:

    models--org--name/refs/main              the revision (a commit hash) the id points at
    models--org--name/snapshots/<revision>/  config.json, weights, ... (usually symlinks to blobs)

Nothing is downloaded; a model that is not there is reported with the path that was looked at.
"""

import os
import re
from pathlib import Path

from d2v.model.checkpoint import CheckpointError

__all__ = ["hub_cache_dir", "is_hub_id", "resolve_hub_id"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded models."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def is_hub_id(text: str) -> bool:
    """True for "org/name" (one slash, HF's allowed characters, no "..")."""
    return bool(_ID.match(text)) and ".." not in text


def resolve_hub_id(model_id: str) -> Path:
    """The snapshot directory of `model_id` in the local HF cache (the revision refs/main names; a
    lone snapshot when there is no refs/main).

    Raises:
        CheckpointError: not an "org/name" id, or not in the cache (the message says where it looked).
    """
    if not is_hub_id(model_id):
        raise CheckpointError(f"{model_id!r} is not a HuggingFace model id (org/name)")
    org, name = model_id.split("/")
    repo = hub_cache_dir() / f"models--{org}--{name}"
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if not repo.is_dir():
        where = repo
    elif ref.is_file():
        revision = ref.read_text().strip()
        snapshot = snapshots / revision
        if revision and snapshot.is_dir():
            return snapshot
        where = snapshot
    else:
        found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
        if len(found) == 1:
            return found[0]
        where = ref if not found else snapshots
    raise CheckpointError(f"{model_id} is neither a local path nor a model in the local HuggingFace cache "
                          f"(looked for {where}; set HF_HUB_CACHE or HF_HOME, or download it first)")

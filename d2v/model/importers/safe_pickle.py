"""Read fairseq `.pt` checkpoints without running code from them.

A fairseq checkpoint is a `torch.save`d dict whose `cfg` is an omegaconf `DictConfig` and whose
`task_state` may hold a fairseq `Dictionary`. `torch.load(weights_only=True)` refuses those classes,
and `weights_only=False` would execute whatever the file names. Here the file is loaded with
`weights_only=True` and every non-torch global it may name is bound to an inert stand-in:

    omegaconf.dictconfig.DictConfig, omegaconf.listconfig.ListConfig, omegaconf.nodes.AnyNode,
    omegaconf.base.Metadata, omegaconf.base.ContainerMetadata,
    fairseq.data.dictionary.Dictionary      -> `Pickled` subclasses that only record their state
    builtins.dict, builtins.list, builtins.int, typing.Any
                                            -> `TypeRef` markers (omegaconf stores type objects)
    collections.defaultdict                 -> a function returning an empty plain dict

The stand-ins have no behaviour: unpickling creates them with `object.__new__` and stores the
pickled state as data. Before loading, the pickle's globals are listed statically; any global
outside this set (and torch's own tensor globals) is refused with an error naming it, so nothing
from the file is ever called. `to_plain` turns the recorded omegaconf tree into dicts and lists.
"""

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from d2v.model.checkpoint import CheckpointError

__all__ = ["ALLOWED_GLOBALS", "Pickled", "TypeRef", "load_fairseq_checkpoint", "to_plain"]


class Pickled:
    """An inert record of a pickled object: its class name and the state pickle handed to it."""

    pickled_name = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_name}>"


def _stand_in(name: str) -> type[Pickled]:
    cls = type(f"Pickled_{name.rsplit('.', 1)[-1]}", (Pickled,), {"pickled_name": name})
    cls.__module__ = __name__
    return cls


class TypeRef:
    """An inert marker for a type object referenced by the pickle (e.g. omegaconf's `ref_type`)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<type {self.name}>"


def _defaultdict(*args: Any) -> dict:
    """`collections.defaultdict(factory)` -> an empty plain dict (the factory is never called)."""
    return {}


_CLASSES = {
    name: _stand_in(name)
    for name in (
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.listconfig.ListConfig",
        "omegaconf.nodes.AnyNode",
        "omegaconf.base.Metadata",
        "omegaconf.base.ContainerMetadata",
        "fairseq.data.dictionary.Dictionary",
    )
}
_TYPES = {name: TypeRef(name) for name in ("builtins.dict", "builtins.list", "builtins.int", "typing.Any")}

ALLOWED_GLOBALS: dict[str, Any] = {**_CLASSES, **_TYPES, "collections.defaultdict": _defaultdict}
"""Every non-torch global a fairseq data2vec 2.0 checkpoint may name, and what it becomes."""


def load_fairseq_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a fairseq checkpoint with `weights_only=True` and the inert stand-ins above.

    Returns:
        The checkpoint dict; `cfg` and `task_state` hold `Pickled` records (see `to_plain`).

    Raises:
        CheckpointError: not a file, not a readable torch zip checkpoint (e.g. truncated), or a
            global outside `ALLOWED_GLOBALS` (named in the message; nothing was loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a torch.save zip archive; "
                              "truncated or another format)")
    with safe_globals([(obj, name) for name, obj in ALLOWED_GLOBALS.items()]):
        try:
            unsafe = get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - any reader failure is reported with the file
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {e}") from None
        if unsafe:
            raise CheckpointError(f"{path}: refusing to load: the pickle names {', '.join(sorted(unsafe))}, "
                                  "which a fairseq data2vec checkpoint does not hold (loading it could run code)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated archives fail in many ways
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {first}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a fairseq checkpoint dict")
    return data


def to_plain(obj: Any) -> Any:
    """Recorded omegaconf containers -> plain dicts / lists / values; other records stay as they are.

    DictConfig and ListConfig keep their children in `state["_content"]` (None for a null
    container); an AnyNode keeps its value in `state["_val"]`."""
    if isinstance(obj, Pickled):
        name, state = obj.pickled_name, getattr(obj, "state", None)
        if name in ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig"):
            content = state.get("_content") if isinstance(state, dict) else None
            return to_plain(content)
        if name == "omegaconf.nodes.AnyNode":
            return to_plain(state.get("_val") if isinstance(state, dict) else None)
        return obj
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj

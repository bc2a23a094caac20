"""The import direction of docs/architecture.md, read from the source (no module is imported): each
part of d2v imports only the parts below it, and the serving engine never imports the web framework."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "d2v"

# part -> the parts it may import (besides itself and the top-level `d2v`, which holds only __version__)
ALLOWED = {
    "d2v.atomic": set(),
    "d2v.configuration": set(),
    "d2v.lazy": set(),
    "d2v.ctc": set(),
    "d2v.wer": set(),
    "d2v.preprocessing": set(),
    "d2v.kernels": set(),
    "d2v.legacy_temporaries": {"d2v.atomic"},
    "d2v.tokenizer": {"d2v.atomic", "d2v.lazy"},
    "d2v.model": {"d2v.atomic", "d2v.lazy", "d2v.legacy_temporaries", "d2v.tokenizer", "d2v.kernels"},
    "d2v.export": {"d2v.atomic", "d2v.lazy", "d2v.legacy_temporaries", "d2v.tokenizer", "d2v.kernels", "d2v.model"},
    "d2v.training": {"d2v.atomic", "d2v.legacy_temporaries", "d2v.tokenizer", "d2v.kernels", "d2v.model",
                     "d2v.preprocessing", "d2v.ctc", "d2v.wer", "d2v.configuration"},
    "d2v.server": {"d2v.atomic", "d2v.lazy", "d2v.tokenizer", "d2v.kernels", "d2v.model", "d2v.export", "d2v.preprocessing",
                   "d2v.ctc", "d2v.configuration"},
}
WEB = ("fastapi", "starlette", "uvicorn")
WEB_MODULES = {"d2v.server", "d2v.server.app", "d2v.server.serve", "d2v.server.protocol"}
"""The only modules that may import the web framework (`d2v.server` itself imports lazily)."""


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions included); `from d2v
    import kernels` counts as `d2v.kernels`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "d2v":
                out += [f"d2v.{a.name}" if a.name != "__version__" else "d2v" for a in node.names]
            else:
                out.append(node.module)
    return out


def _sources() -> list[Path]:
    """Every module but `d2v/__init__.py` (the version) and `d2v/cli.py` (it wires up every part)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name not in ("__init__.py", "cli.py"))


def test_every_part_is_listed():
    assert {_part(_module(p)) for p in _sources()} == set(ALLOWED)


def test_parts_import_only_the_parts_below_them():
    wrong = []
    for path in _sources():
        part = _part(_module(path))
        for target in _imports(path):
            if target == "d2v" or not target.startswith("d2v."):
                continue
            if _part(target) != part and _part(target) not in ALLOWED[part]:
                wrong.append(f"{_module(path)} imports {target}")
    assert wrong == []


def test_only_the_http_layer_imports_the_web_framework():
    wrong = [f"{_module(p)} imports {t}" for p in _sources() for t in _imports(p)
             if t.split(".")[0] in WEB and _module(p) not in WEB_MODULES]
    assert wrong == []

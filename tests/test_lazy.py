"""`lazy_exports`: a package's names imported from their modules on first read, and only then."""

import subprocess
import sys

import pytest


def test_names_are_imported_on_first_read_and_kept():
    code = """
import sys
import d2v.export, d2v.server, d2v.tokenizer
assert not {"d2v.export.runtime", "onnxruntime", "fastapi", "numpy"} & set(sys.modules)
assert d2v.tokenizer.TokenizerError.__module__ == "d2v.tokenizer.spec" and "numpy" not in sys.modules
assert "OnnxModel" in dir(d2v.export) and d2v.export.OPSET == 18
from d2v.export import OnnxModel
from d2v.export.runtime import OnnxModel as direct
assert OnnxModel is direct and vars(d2v.export)["OnnxModel"] is direct
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_an_unknown_name_is_an_attribute_error_naming_the_package():
    import d2v.model

    with pytest.raises(AttributeError, match="module 'd2v.model' has no attribute 'nothing_here'"):
        d2v.model.nothing_here  # noqa: B018
    assert d2v.model.build_encoder.__module__ == "d2v.model.builder"

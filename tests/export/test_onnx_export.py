"""ONNX export: every modality with and without a head, parity with PyTorch on real inputs through
onnxruntime, dynamic batch and length axes, fp16 and optimized variants, a torch-free runtime, and
named errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from realdata import byte_tokens, pad_waveforms, tiny_config
from texts import (
    BROKEN_CASES,
    assert_one_line_error,
    broken_tokenizers_of_a_new_checkpoint,
)

from d2v.atomic import _host
from d2v.cli import main as cli_main
from d2v.export import ExportError, ExportOptions, export_checkpoint
from d2v.export.runtime import ExportFormatError, OnnxModel
from d2v.model import HeadConfig, build_encoder
from d2v.model.checkpoint import CheckpointConfig, load_checkpoint, save_checkpoint

HEADS = {
    "image": HeadConfig("mean_pool", [str(i) for i in range(10)], "mean"),
    "audio": HeadConfig("mean_pool", ["one", "three", "seven"], "mean"),
    "text": HeadConfig("first_token", ["noun.act", "noun.animal"], "cls"),
}


def make_checkpoint(path, modality: str, head: bool = True):
    torch.manual_seed(0)
    cfg = tiny_config(modality).encoder
    h = HEADS[modality] if head else None
    save_checkpoint(path, build_encoder(cfg, h), CheckpointConfig(f"tiny-{modality}", cfg, h))
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export per modality, from a checkpoint with a head."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for modality in ("image", "audio", "text"):
        ckpt = make_checkpoint(root / f"ckpt-{modality}", modality)
        section = export_checkpoint(ckpt, root / f"onnx-{modality}")
        out[modality] = (ckpt, root / f"onnx-{modality}", section)
    return out


def real_inputs(modality, digit_images, spoken_digits, glosses):
    """Real inputs whose batch sizes and lengths differ from the ones traced at export."""
    if modality == "image":
        x = digit_images[0][:5]
        return (x,), {"pixel_values": x.numpy()}
    if modality == "audio":
        x, pad = pad_waveforms(spoken_digits[:4])
        return (x, pad), {"waveform": x.numpy(), "padding_mask": pad.numpy()}
    ids = byte_tokens(glosses[:6], vocab=tiny_config("text").encoder.text.vocab_size, max_len=90)
    pad = ids.eq(1)
    return (ids, pad), {"input_ids": ids.numpy(), "padding_mask": pad.numpy()}


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_export_directory_and_parity_on_real_inputs(modality, exports, digit_images, spoken_digits, glosses):
    ckpt, out, _ = exports[modality]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "embed.onnx", "classify.onnx"] + (["tokenizer.model"] if (ckpt / "tokenizer.model").exists() else [])
    )
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "d2v.checkpoint" and config["modality"] == modality
    assert config["onnx"]["opset"] == 18 and set(config["onnx"]["graphs"]) == {"embed", "classify"}
    for name in ("embed", "classify"):
        parity = config["onnx"]["parity"][name]
        assert parity["max_abs_diff"] <= parity["tolerance"] == 1e-4
    assert config["onnx"]["graphs"]["embed"]["outputs"][0]["name"] == "token_states"
    # dynamic axes are symbolic in the graph
    dims = config["onnx"]["graphs"]["embed"]["inputs"][0]["shape"]
    assert isinstance(dims[0], str)

    model, _ = load_checkpoint(ckpt)
    torch_inputs, feed = real_inputs(modality, digit_images, spoken_digits, glosses)
    onnx_model = OnnxModel(out)
    got = onnx_model.embed(feed)
    with torch.inference_mode():
        tokens, pad = model.forward_features(*torch_inputs)
        logits = model.forward_head(tokens, pad)
        pooled = model.pool(tokens, pad, HEADS[modality].pooling)
    real = np.ones(tokens.shape[:2], bool) if pad is None else ~pad.numpy()
    if pad is not None:
        assert np.array_equal(got["token_padding_mask"], pad.numpy())
    assert np.abs(got["token_states"][real] - tokens.numpy()[real]).max() < 1e-4
    assert np.abs(got["pooled_embedding"] - pooled.numpy()).max() < 1e-4
    assert np.abs(onnx_model.classify(feed)["logits"] - logits.numpy()).max() < 1e-4


def test_audio_graph_takes_any_duration_and_batch_of_one(exports, spoken_digits):
    ckpt, out, _ = exports["audio"]
    model, _ = load_checkpoint(ckpt)
    onnx_model = OnnxModel(out)
    for n in (1_000, 7_777, 40_000):  # 62 ms, an odd length, 2.5 s
        x = torch.from_numpy(np.resize(spoken_digits[0], n))[None]
        pad = torch.zeros_like(x, dtype=torch.bool)
        got = onnx_model.embed({"waveform": x.numpy(), "padding_mask": pad.numpy()})
        with torch.inference_mode():
            tokens, _ = model.forward_features(x, pad)
        assert got["token_states"].shape == tokens.shape
        assert np.abs(got["token_states"] - tokens.numpy()).max() < 1e-4


def test_text_graph_takes_the_model_limit(exports):
    _, out, section = exports["text"]
    limit = tiny_config("text").encoder.text.max_positions
    assert section["parity"]["embed"]["inputs"][2][0] == [4, limit]  # the parity check covered the limit
    ids = torch.randint(4, 100, (1, limit))
    got = OnnxModel(out).embed({"input_ids": ids.numpy(), "padding_mask": np.zeros((1, limit), bool)})
    assert got["token_states"].shape == (1, limit, 32)


def test_checkpoint_without_head_exports_embed_only(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", "image", head=False)
    section = export_checkpoint(ckpt, tmp_path / "onnx")
    assert set(section["graphs"]) == {"embed"}
    assert not (tmp_path / "onnx" / "classify.onnx").exists()
    model = OnnxModel(tmp_path / "onnx")
    with pytest.raises(ExportFormatError, match="no classify.onnx"):
        model.classify({"pixel_values": np.zeros((1, 3, 32, 32), np.float32)})


def test_fp16_and_optimized_graphs_record_their_own_parity(tmp_path, exports):
    ckpt = exports["text"][0]
    fp16 = export_checkpoint(ckpt, tmp_path / "fp16", ExportOptions(fp16=True))
    assert fp16["precision"] == "float16"
    assert 0 < fp16["parity"]["embed"]["max_abs_diff"] <= fp16["parity"]["embed"]["tolerance"] == 2e-2
    fused = export_checkpoint(ckpt, tmp_path / "opt", ExportOptions(optimize=True))
    assert fused["optimized"] and fused["graphs"]["embed"]["fusions"]  # e.g. SkipLayerNormalization
    assert fused["parity"]["embed"]["max_abs_diff"] <= 1e-4


def test_export_fails_loudly_above_tolerance(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", "image", head=False)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_checkpoint(ckpt, tmp_path / "onnx", ExportOptions(tolerance=1e-12))
    assert not (tmp_path / "onnx").exists()  # nothing half-written


def test_runtime_runs_without_torch(exports, tmp_path):
    _, out, _ = exports["image"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = OnnxModel(out).embed({"pixel_values": x})["pooled_embedding"]
    np.save(tmp_path / "expected.npy", expected)
    script = (
        "import sys, numpy as np\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from d2v.export.runtime import OnnxModel\n"
        f"m = OnnxModel({str(out)!r})\n"
        f"got = m.embed({{'pixel_values': np.load({str(tmp_path / 'x.npy')!r})}})['pooled_embedding']\n"
        f"assert np.array_equal(got, np.load({str(tmp_path / 'expected.npy')!r}))\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("d2v export: error:") and "not a directory" in err
    with pytest.raises(ExportFormatError, match="config.json is missing"):
        OnnxModel(tmp_path)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return broken_tokenizers_of_a_new_checkpoint(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_a_broken_or_wrong_tokenizer_is_refused_before_exporting(broken, case, tmp_path, capsys):
    path, expected = broken[case]
    assert cli_main(["export", str(path), "--out", str(tmp_path / "onnx")]) == 2
    assert_one_line_error(capsys.readouterr().err, "d2v export: error: ", expected)
    assert not (tmp_path / "onnx").exists() and list(tmp_path.iterdir()) == []


def _snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_out_never_replaces_a_checkpoint_or_anything_but_an_export(tmp_path, exports, capsys):
    """`--out` naming the checkpoint, another checkpoint, a directory holding the checkpoint, a file
    or a foreign directory is refused before any work, and nothing is touched; an earlier export
    (and the temporaries of killed exports, legacy names included) is replaced."""
    ckpt = make_checkpoint(tmp_path / "ckpt", "image", head=False)
    other = make_checkpoint(tmp_path / "other", "audio", head=False)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"jpeg")
    before = _snapshot(tmp_path)
    for out, why in [(ckpt, "is (or holds) the checkpoint"), (tmp_path, "is (or holds) the checkpoint"),
                     (other, "is a d2v checkpoint"), (a_file, "not a directory"),
                     (foreign, "not a d2v export directory")]:
        assert cli_main(["export", str(ckpt), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("d2v export: error: refusing to replace") and why in err and err.count("\n") == 1, err
        assert _snapshot(tmp_path) == before
    load_checkpoint(ckpt)

    # an earlier export is replaced; temporaries of killed exports beside it are cleaned
    out = tmp_path / "exp"
    shutil.copytree(exports["image"][1], out)
    legacy = tmp_path / ".exp.k2j4x9_a"  # tempfile.mkdtemp's name in older versions
    legacy.mkdir()
    (legacy / "embed.onnx").write_bytes(b"partial")
    dead = tmp_path / f".exp.{_host()}-4194999-0a1b2c3d.d2v-tmp"  # no such process: pid_max is 4194304
    dead.mkdir()
    assert cli_main(["export", str(ckpt), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["name"] == "tiny-image"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "embed.onnx"]
    assert not legacy.exists() and not dead.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_non_finite_parity_fails_the_export(tmp_path, capsys):
    """Finite weights whose logits overflow to Inf: inf - inf is NaN, which `max` used to drop,
    recording parity 0.0 and exiting 0."""
    torch.manual_seed(0)
    cfg = tiny_config("image").encoder
    model = build_encoder(cfg, HEADS["image"])
    with torch.no_grad():
        model.head.fc.weight.fill_(3e38)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, CheckpointConfig("overflow", cfg, HEADS["image"]))
    assert cli_main(["export", str(ckpt), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert "classify.onnx" in err and "not finite" in err and err.count("\n") == 1, err
    assert not (tmp_path / "onnx").exists()

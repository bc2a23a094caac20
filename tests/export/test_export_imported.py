"""Every kind of model `d2v convert` imports (fairseq pretrained image, audio and text, the fairseq
image classifier and CTC recognizer, HF text and audio sequence classifiers and the HF CTC model)
exports with its recorded parity, and the onnxruntime backend serves it: the same embeddings,
logits, emissions and transcripts as the PyTorch backend on real inputs, and the reference
implementation's own outputs (fairseq's arrays, transformers' logits)."""

import json

import numpy as np
import onnx
import pytest
import torch
from imported import CTC_VOCAB, KINDS, fairseq_fixture

from d2v.ctc import greedy_decode
from d2v.model.encoders.audio import normalize_waveform
from d2v.server.backends.base import Task, load_backend

TOL = 1e-4  # the export's fp32 parity tolerance
HEAD_GRAPH = {"fairseq-image-classifier": "classify", "fairseq-ctc": "emissions", "hf-text-classifier": "classify",
              "hf-audio-classifier": "classify", "hf-ctc": "emissions"}


def _hf_reference(hf, items: list[np.ndarray], audio: bool) -> list[np.ndarray]:
    """transformers' logits (C,) or emissions (T, V) of each item alone (HF normalizes audio outside
    the model, d2v inside)."""
    out = []
    with torch.no_grad():
        for x in items:
            t = torch.from_numpy(x)[None]
            out.append((hf(normalize_waveform(t)) if audio else hf(input_ids=t)).logits[0].numpy())
    return out


def case(kind: str, imported, spoken_digits) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], list[str] | None]:
    """Real inputs of `kind` as the server's decoders make them, the reference outputs by task
    ("embed" (mean pooling), "classify", "transcribe": emissions), and the reference transcripts."""
    if kind.startswith("fairseq"):
        _, inputs, expected = fairseq_fixture(kind)
        if "images" in inputs:
            items = list(inputs["images"])
        elif "waveforms" in inputs:
            items = [w[:n] for w, n in zip(inputs["waveforms"], inputs["lengths"], strict=True)]
        else:
            items = [t[:n] for t, n in zip(inputs["tokens"], inputs["lengths"], strict=True)]
        refs = {"embed": list(expected["pooled"])} if "pooled" in expected and kind != "fairseq-ctc" else {}
        if "logits" in expected:
            refs["classify"] = list(expected["logits"])
        if kind == "fairseq-ctc":
            refs["transcribe"] = [expected[f"emissions_{i}"] for i in range(len(items))]
            return items, refs, expected["transcripts"].tolist()
        return items, refs, None
    imported.checkpoint(kind)  # builds the HF model
    hf = imported.hf_models[kind]
    if kind == "hf-text-classifier":
        items = [np.array([0, *range(5 + 7 * k, 5 + 7 * k + n), 2], np.int64) for k, n in enumerate((9, 3, 20))]
        return items, {"classify": _hf_reference(hf, items, audio=False)}, None
    items = [w.astype(np.float32) for w in spoken_digits[:3]]
    task = "transcribe" if kind == "hf-ctc" else "classify"
    refs = {task: _hf_reference(hf, items, audio=True)}
    return items, refs, None


@pytest.mark.parametrize("kind", KINDS)
def test_every_imported_kind_exports_and_is_served_by_onnxruntime(kind, imported, spoken_digits):
    config = json.loads((imported.export(kind) / "config.json").read_text())
    graphs = {"embed"} | ({HEAD_GRAPH[kind]} if kind in HEAD_GRAPH else set())
    assert set(config["onnx"]["graphs"]) == graphs == set(config["onnx"]["parity"])
    for name in graphs:
        parity = config["onnx"]["parity"][name]
        assert 0 <= parity["max_abs_diff"] <= parity["tolerance"] == TOL, (name, parity)
    if kind in ("fairseq-ctc", "hf-ctc"):
        outputs = [o["name"] for o in config["onnx"]["graphs"]["emissions"]["outputs"]]
        assert outputs == ["emissions", "frame_padding_mask"]

    items, refs, transcripts = case(kind, imported, spoken_digits)
    torch_b = load_backend(imported.checkpoint(kind), backend="torch", device="cpu", threads=1)
    onnx_b = load_backend(imported.export(kind), backend="onnx", device="cpu", threads=1)
    assert (torch_b.backend, onnx_b.backend) == ("torch", "onnx") and onnx_b.tasks == torch_b.tasks
    assert onnx_b.labels == torch_b.labels and onnx_b.vocabulary == torch_b.vocabulary
    tasks = {"embed": Task("embed", "mean"), "classify": Task("classify"), "transcribe": Task("transcribe")}
    for name in torch_b.tasks:
        got = onnx_b.run(items, [tasks[name]] * len(items))  # one padded batch
        want = torch_b.run(items, [tasks[name]] * len(items))
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and float(np.abs(g - w).max()) < TOL, name
        for g, r in zip(got, refs.get(name, got), strict=True):  # the reference implementation's own outputs
            assert g.shape == r.shape and float(np.abs(g - r).max()) < TOL, name
    if "transcribe" in refs:
        if transcripts is None:  # HF: its own emissions decoded greedily
            transcripts = [greedy_decode(e[None], torch_b.vocabulary)[0] for e in refs["transcribe"]]
        assert torch_b.vocabulary.labels == tuple(CTC_VOCAB) or kind == "fairseq-ctc"
        emissions = onnx_b.run(items, [tasks["transcribe"]] * len(items))
        assert [greedy_decode(e[None], onnx_b.vocabulary)[0] for e in emissions] == transcripts
    assert torch_b.tasks == ["embed", *(["classify"] if "classify" in graphs else []),
                             *(["transcribe"] if "emissions" in graphs else [])]


def test_a_ctc_export_from_before_emissions_onnx_still_transcribes(imported, tmp_path):
    """Exports of CTC models written before emissions.onnx hold classify.onnx, whose `logits` are the
    emissions: the onnx backend reads them, each item's frames counted from its samples."""
    import shutil

    old = tmp_path / "old-export"
    shutil.copytree(imported.export("fairseq-ctc"), old)
    graph = onnx.load(str(old / "emissions.onnx"))
    for node in graph.graph.node:  # what ClassifyGraph wrote: one output, `logits`
        node.output[:] = ["logits" if o == "emissions" else o for o in node.output]
        node.input[:] = ["logits" if o == "emissions" else o for o in node.input]
    for info in graph.graph.value_info:
        if info.name == "emissions":
            info.name = "logits"
    outputs = [o for o in graph.graph.output if o.name == "emissions"]
    outputs[0].name = "logits"
    del graph.graph.output[:]
    graph.graph.output.extend(outputs)
    onnx.save(graph, str(old / "classify.onnx"))
    (old / "emissions.onnx").unlink()
    config = json.loads((old / "config.json").read_text())
    config["onnx"]["graphs"] = {"embed": config["onnx"]["graphs"]["embed"], "classify": {"file": "classify.onnx"}}
    (old / "config.json").write_text(json.dumps(config))

    _, inputs, expected = fairseq_fixture("fairseq-ctc")
    items = [w[:n] for w, n in zip(inputs["waveforms"], inputs["lengths"], strict=True)]
    backend = load_backend(old, device="cpu", threads=1)
    emissions = backend.run(items, [Task("transcribe")] * len(items))
    assert [e.shape[0] for e in emissions] == [expected[f"emissions_{i}"].shape[0] for i in range(3)]
    assert [greedy_decode(e[None], backend.vocabulary)[0] for e in emissions] == expected["transcripts"].tolist()

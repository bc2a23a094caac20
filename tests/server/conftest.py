"""Server fixtures: tiny checkpoints of each modality (dim 32, 2 blocks, with heads; the text model
with a sentencepiece tokenizer trained on WordNet glosses), their ONNX exports, and one real uvicorn
process on a free loopback port serving all of them and a converted fairseq speech recognizer. Every response a test here receives through httpx
is checked against the published OpenAPI document (`contract.py`)."""

from pathlib import Path

import httpx
import pytest
import torch
from contract import problems, record_responses
from harness import API_KEY, CORS_ORIGIN, Server
from realdata import WORDNET, missing, tiny_config

from d2v.model import HeadConfig, build_encoder
from d2v.model.checkpoint import CheckpointConfig, save_checkpoint

HEADS = {
    "image": HeadConfig("mean_pool", [str(i) for i in range(10)], "mean"),
    "audio": HeadConfig("mean_pool", ["zero", "one", "two", "three", "seven"], "mean"),
    "text": HeadConfig("first_token", ["noun.act", "noun.animal", "noun.artifact"], "cls"),
}
TEXT_MAX_TOKENS = 48


def train_tokenizer(directory: Path) -> Path:
    import sentencepiece as spm

    f = WORDNET / "data.noun"
    if not f.is_file():
        missing("wordnet-base")
    lines = [ln.split("|", 1)[1].strip() for ln in f.read_text(errors="replace").splitlines()
             if not ln.startswith(" ") and "|" in ln][:3000]
    corpus = directory / "glosses.txt"
    corpus.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(directory / "spm"), vocab_size=300,
                                   pad_id=1, bos_id=0, eos_id=2, unk_id=3, minloglevel=2)
    return directory / "spm.model"


def make_checkpoint(path: Path, modality: str, tokenizer: Path | None = None) -> Path:
    import sentencepiece as spm

    torch.manual_seed(0)
    cfg = tiny_config(modality).encoder
    if modality == "text":
        cfg.text.vocab_size = spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size()
        cfg.text.max_positions = TEXT_MAX_TOKENS
    save_checkpoint(path, build_encoder(cfg, HEADS[modality]), CheckpointConfig(f"tiny-{modality}", cfg,
                                                                                HEADS[modality]),
                    tokenizer=tokenizer if modality == "text" else None)
    return path


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """{"image", "audio", "text"} checkpoints and {"image-onnx", ...} exports."""
    from d2v.export import export_checkpoint

    root = tmp_path_factory.mktemp("models")
    tok = train_tokenizer(root)
    out: dict[str, Path] = {}
    for m in ("image", "audio", "text"):
        out[m] = make_checkpoint(root / f"tiny-{m}", m, tok)
        export_checkpoint(out[m], root / f"tiny-{m}-onnx")
        out[f"{m}-onnx"] = root / f"tiny-{m}-onnx"
    return out


@pytest.fixture(autouse=True)
def http_contract():
    """Fails a test whose responses break the documented contract (status, media type, body)."""
    with record_responses() as responses:
        yield responses
    broken = [p for r in responses for p in problems(r)]
    assert not broken, "responses the OpenAPI document does not allow:\n" + "\n".join(broken[:20])


@pytest.fixture(scope="session")
def server(model_dirs, imported) -> Server:
    """Every tiny model with both backends, a speech recognizer (the converted fairseq CTC checkpoint),
    an API key, small limits, a model with a tiny queue and a long batching wait (for 429), and one
    CORS origin."""
    args = []
    for m in ("image", "audio", "text"):
        args += ["--model", f"{m}={model_dirs[m]}", "--model", f"{m}-onnx={model_dirs[m + '-onnx']}"]
    args += ["--model", f"ctc={imported.checkpoint('fairseq-ctc')}"]
    args += ["--model", f"text-slow={model_dirs['text']},max_queue=4,max_wait_ms=2000",
             "--max-inputs", "16", "--max-audio-seconds", "5", "--max-pixels", "1000000",
             "--max-payload-bytes", str(2 * 1024 * 1024), "--max-wait-ms", "10", "--api-key", API_KEY,
             "--cors-origins", CORS_ORIGIN]
    s = Server(args)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def demo_server() -> Server:
    """`d2v serve` with no arguments: the bundled demo models of models/."""
    s = Server([])
    yield s
    s.stop()

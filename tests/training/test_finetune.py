"""`d2v finetune`: from a pretrained checkpoint and from scratch, for each modality, producing a
checkpoint with a head and its labels, test accuracy and a confusion matrix."""

import json
import shlex

import pytest
import torch
from safetensors import safe_open
from test_pretrain import model_json
from texts import (
    BROKEN_CASES,
    assert_one_line_error,
    broken_tokenizers_of_a_new_checkpoint,
)
from torch.utils.data import DataLoader

from d2v.cli import main
from d2v.model import HeadConfig, build_encoder
from d2v.model.checkpoint import load_checkpoint
from d2v.training.collate import collate_images
from d2v.training.config import FinetuneConfig, PretrainConfig
from d2v.training.data import EpochBatches, build_dataset, read_split
from d2v.training.distributed import Distributed
from d2v.training.finetune import _load_pretrained, evaluate, finetune, labelled_subset
from d2v.training.pretrain import pretrain

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, digits_dir):
    tmp = tmp_path_factory.mktemp("pre")
    return pretrain(PretrainConfig("image", str(digits_dir), out=str(tmp / "run"), model_config=model_json(tmp, "image"),
                                   steps=2, batch_size=4, progress=False))


def test_from_pretrained(tmp_path, digits_dir, pretrained):
    cfg = FinetuneConfig(str(digits_dir), out=str(tmp_path / "ft"), init=str(pretrained), labels_per_class=2,
                         epochs=2, batch_size=8, eval_batch_size=128, progress=False, save_dtype="float16")
    best = finetune(cfg)
    model, ckpt = load_checkpoint(best)
    assert ckpt.head.labels == DIGITS and ckpt.head.type == "mean_pool"
    p = ckpt.provenance
    assert p["init"] == str(pretrained) and p["from_scratch"] is False and p["pretrained"]["kind"] == "pretrain"
    assert p["train_examples"] == 20 and 0.0 <= p["metrics"]["test_accuracy"] <= 1.0
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    confusion = torch.tensor(results["test_confusion"])
    assert confusion.shape == (10, 10) and int(confusion.sum()) == results["test_count"] == 359
    assert results["test_accuracy"] == pytest.approx(float(confusion.trace()) / 359)
    with safe_open(str(best / "model.safetensors"), "pt") as f:
        assert f.get_tensor("head.fc.weight").dtype == torch.float16
    data = build_dataset(ckpt.encoder, read_split(digits_dir, "test", "image"), DIGITS, train=False)
    loader = DataLoader(data, batch_sampler=EpochBatches(len(data), 128, 0, 0, False), collate_fn=collate_images)
    shipped = evaluate(model, loader, 10, Distributed(), torch.device("cpu"), "fp32")
    assert shipped["accuracy"] == results["test_accuracy"]  # the recorded accuracy is the fp16 checkpoint's
    logits = model(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    metrics = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics if "val_accuracy" in m] == [1, 2]


def test_pretrained_weights_are_loaded(pretrained):
    pre, cfg = load_checkpoint(pretrained)
    model = build_encoder(cfg.encoder, HeadConfig("mean_pool", DIGITS))
    _load_pretrained(model, str(pretrained))
    for k, v in pre.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_labelled_subset_is_fixed_and_balanced(digits_dir):
    records = read_split(digits_dir, "train", "image")
    a = labelled_subset(records, DIGITS, 3, seed=0)
    assert a == labelled_subset(records, DIGITS, 3, seed=0) != labelled_subset(records, DIGITS, 3, seed=1)
    assert sorted(r.label for r in a) == sorted(DIGITS * 3)


def test_from_scratch_audio_with_baseline(tmp_path, speech_dir):
    scratch = tmp_path / "scratch"
    finetune(FinetuneConfig(str(speech_dir), out=str(scratch), modality="audio",
                            model_config=model_json(tmp_path, "audio"), epochs=1, batch_size=8, progress=False))
    assert load_checkpoint(scratch / "best")[1].provenance["from_scratch"] is True
    other = finetune(FinetuneConfig(str(speech_dir), out=str(tmp_path / "other"), modality="audio",
                                    model_config=model_json(tmp_path, "audio"), epochs=1, batch_size=8, seed=1,
                                    progress=False, baseline=str(scratch)))
    _, ckpt = load_checkpoint(other)
    assert ckpt.head.labels == ["zero", "one", "two"]
    baseline = ckpt.provenance["baseline"]
    results = json.loads((scratch / "results.json").read_text())
    assert baseline["test_accuracy"] == results["test_accuracy"] and baseline["from_scratch"] is True


def test_text_from_scratch_on_the_command_line(tmp_path, wordnet_dir, capsys):
    out = tmp_path / "text"
    rc = main(["finetune", "--data", str(wordnet_dir), "--out", str(out), "--modality", "text", "--model-config",
               model_json(tmp_path, "text"), "--vocab-size", "150", "--max-tokens", "24", "--epochs", "1",
               "--batch-size", "16", "--progress", "false"])
    assert rc == 0
    assert "test accuracy" in capsys.readouterr().out
    _, ckpt = load_checkpoint(out / "best")
    assert ckpt.head.type == "first_token" and ckpt.head.pooling == "cls" and len(ckpt.head.labels) == 3
    argv = ["finetune", "--data", str(wordnet_dir), "--out", str(tmp_path / "mean"), "--init", str(out / "best"),
            "--head", "mean_pool", "--max-tokens", "24", "--epochs", "1", "--progress", "false"]
    rc = main(argv)
    assert rc == 0
    _, ckpt = load_checkpoint(tmp_path / "mean" / "best")
    assert ckpt.head.type == "mean_pool" and ckpt.head.pooling == "mean"
    assert (out / "best" / "tokenizer.model").is_file()  # trained on the training texts: no tokenizer was given
    assert ckpt.provenance["command"] == shlex.join(["d2v", *argv])  # the arguments given, not the process's


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return broken_tokenizers_of_a_new_checkpoint(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_a_broken_or_wrong_tokenizer_is_one_clear_line(broken, case, tmp_path, wordnet_dir, capsys):
    path, expected = broken[case]
    rc = main(["finetune", "--data", str(wordnet_dir), "--out", str(tmp_path / "ft"), "--init", str(path),
               "--epochs", "1", "--progress", "false"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "d2v finetune: ", expected)


def test_killed_runs_temporaries_are_removed_at_start(tmp_path, digits_dir, pretrained):
    from d2v.atomic import _host

    out, dead = tmp_path / "ft", 4194999
    out.mkdir()
    planted = [out / ".best.k2j4x9_a", out / f".best.{_host()}-{dead}-0a1b2c3d.d2v-tmp",
               out / f".tokenizer.model.{dead}.tmp"]
    for p in planted:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"a checkpoint's worth")
    finetune(FinetuneConfig(str(digits_dir), out=str(out), init=str(pretrained), labels_per_class=1, epochs=1,
                            batch_size=8, eval_batch_size=128, progress=False))
    assert not [p for p in planted if p.exists()]
    assert sorted(p.name for p in out.iterdir()) == ["best", "config.json", "metrics.jsonl", "results.json"]

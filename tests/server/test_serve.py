"""`d2v serve` on the command line: flags from ServeConfig, demo-model discovery, clear errors."""

import shutil

import pytest
from texts import BROKEN_CASES, assert_one_line_error, broken_tokenizer_checkpoints

from d2v.cli import build_parser, main
from d2v.configuration import config_from_args
from d2v.server import config as config_mod
from d2v.server.config import ServeConfig, demo_model_dirs


def test_flags_build_the_config():
    args = build_parser().parse_args(["serve", "--model", "a", "--model", "b=/x,max_queue=3", "--max-wait-ms", "2.5",
                                      "--backend", "onnx", "--no-warmup", "--api-key", "k"])
    cfg = config_from_args(ServeConfig, args)
    assert cfg.models == ["a", "b=/x,max_queue=3"] and cfg.max_wait_ms == 2.5 and cfg.backend == "onnx"
    assert cfg.warmup is False and cfg.api_key == "k"
    cfg = config_from_args(ServeConfig, build_parser().parse_args(
        ["serve", "--quantize", "int8", "--min-cosine", "0.995", "--workers", "3", "--cache-dir", "c"]))
    assert (cfg.quantize, cfg.min_cosine, cfg.workers, cfg.cache_dir) == ("int8", 0.995, 3, "c")


def test_a_config_file_holds_the_settings_and_flags_override_it(tmp_path, capsys):
    """`--config FILE` (YAML or JSON) through the training commands' mechanism: values converted by
    type, keys by field or flag name, the flags given win; a bad value is one line naming the key."""
    file = tmp_path / "serve.yaml"
    file.write_text("model:\n  - a\n  - b=/x,max_queue=3\nmax-wait-ms: 2.5\nwarmup: no\nport: '9000'\n"
                    "backend: onnx\n")
    cfg = config_from_args(ServeConfig, build_parser().parse_args(["serve", "--config", str(file), "--port", "9001"]))
    assert cfg.models == ["a", "b=/x,max_queue=3"] and cfg.max_wait_ms == 2.5 and cfg.warmup is False
    assert (cfg.port, cfg.backend) == (9001, "onnx")
    file.write_text("max-batch-size: many\n")
    assert main(["serve", "--config", str(file)]) == 2
    assert_one_line_error(capsys.readouterr().err, "d2v serve: ", f"{file}: max-batch-size: ", "expected an integer")


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("D2V_API_KEY", "from-env")
    assert config_from_args(ServeConfig, build_parser().parse_args(["serve"])).api_key == "from-env"


def test_demo_models_are_found_under_models(tmp_path, monkeypatch, model_dirs):
    shutil.copytree(model_dirs["text"], tmp_path / "models" / "wordnet-text")
    (tmp_path / "models" / "notes").mkdir()  # not a model: no config.json
    monkeypatch.chdir(tmp_path)
    assert demo_model_dirs() == [tmp_path / "models" / "wordnet-text"]


def test_no_models_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(config_mod, "demo_model_dirs", list)
    import d2v.server.serve as serve_mod

    monkeypatch.setattr(serve_mod, "demo_model_dirs", list)
    assert main(["serve"]) == 2
    assert "no demo models found" in capsys.readouterr().err


def test_a_bad_model_path_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "cannot load the models" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["/x,speed=3"])
def test_bad_per_model_option(spec, capsys):
    assert main(["serve", "--model", spec]) == 2
    assert "per-model options" in capsys.readouterr().err


@pytest.fixture(scope="module")
def broken(model_dirs, tmp_path_factory):
    return broken_tokenizer_checkpoints(model_dirs["text"], tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_a_broken_or_wrong_tokenizer_is_one_clear_line(broken, case, capsys, monkeypatch):
    import uvicorn

    def served(*args, **kwargs):
        raise AssertionError("d2v serve went on to serve a model with a broken tokenizer")

    monkeypatch.setattr(uvicorn, "run", served)
    path, expected = broken[case]
    assert main(["serve", "--model", str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "d2v serve: cannot load the models", expected)


@pytest.mark.parametrize("host,names", [
    ("127.0.0.1", ["localhost", "127.0.0.1", "::1"]), ("localhost", ["localhost", "127.0.0.1", "::1"]),
    ("::1", ["localhost", "127.0.0.1", "::1"]), ("127.0.0.2", ["localhost", "127.0.0.1", "::1"]),
    ("0.0.0.0", ["*"]), ("192.168.1.5", ["*"]),  # bound to a network: any name, unless --allowed-hosts
])
def test_allowed_hosts_default_to_the_loopback_names(host, names):
    from d2v.server.config import ServeConfig

    assert ServeConfig(host=host).host_names() == names
    assert ServeConfig(host=host, allowed_hosts="Api.Example.com, *.lan").host_names() == ["api.example.com", "*.lan"]


def test_connection_flags(monkeypatch):
    args = build_parser().parse_args(["serve", "--limit-concurrency", "50", "--header-timeout-s", "3",
                                      "--body-timeout-s", "9", "--keep-alive-timeout-s", "2", "--max-header-bytes",
                                      "4096", "--allowed-hosts", "a.example", "--cors-origins", "https://b.example/"])
    cfg = config_from_args(ServeConfig, args)
    assert (cfg.limit_concurrency, cfg.header_timeout_s, cfg.body_timeout_s, cfg.keep_alive_timeout_s,
            cfg.max_header_bytes) == (50, 3.0, 9.0, 2, 4096)
    assert cfg.host_names() == ["a.example"] and cfg.origins() == ["https://b.example"]
    assert ServeConfig().origins() == []


def test_the_open_files_limit_is_raised_and_the_connection_cap_fits_it():
    import logging
    import resource

    from d2v.server.serve import RESERVED_FILES, connection_cap, raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_open_files_limit() == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = logging.getLogger("test")
    assert connection_cap(1000, 4096, log) == 1000
    assert connection_cap(1000, 1024, log) == 1024 - RESERVED_FILES
    assert connection_cap(0, 1024, log) == 1024 - RESERVED_FILES
    assert connection_cap(1000, None, log) == 1000


@pytest.mark.parametrize("flag,value", [("--limit-concurrency", "-1"), ("--header-timeout-s", "0"),
                                        ("--body-timeout-s", "-3"), ("--max-header-bytes", "0"), ("--workers", "0"),
                                        ("--min-cosine", "1.5")])
def test_bad_connection_settings_are_one_clear_line(flag, value, capsys):
    assert main(["serve", "--model", "/x", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"d2v serve: {flag} must be") and err.count("\n") == 1


def test_serving_onnx_exports_never_imports_torch(model_dirs, tmp_path):
    """`d2v export` the tiny checkpoints of each modality, then `d2v serve` the export directories in a
    process where importing torch fails (and says so in the log): warm-up and /embed of every modality
    work, and nothing tried to import torch."""
    import httpx
    from harness import BLOCKED, Server, python_without
    from media import b64, digit, image_bytes, spoken

    models = []
    for modality in ("image", "audio", "text"):
        assert main(["export", str(model_dirs[modality]), "--out", str(tmp_path / modality)]) == 0
        models += ["--model", f"{modality}={tmp_path / modality}"]
    inputs = {"image": [b64(image_bytes(digit(7)), "image/png")], "audio": [b64(spoken("seven"), "audio/wav")],
              "text": ["a domesticated carnivorous mammal"]}
    server = Server(models, python=python_without("torch"))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for modality, batch in inputs.items():
                r = client.post("/embed", json={"model": modality, "inputs": batch})
                assert r.status_code == 200, r.text
                assert r.json()["model"] == modality and len(r.json()["data"]) == 1
    finally:
        server.stop()
    assert BLOCKED not in server.output(), server.output()

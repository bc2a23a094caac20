"""`ServeConfig`: every knob of `d2v serve`, one typed dataclass. The command line is generated from
its fields (`add_serve_arguments`), so a field's `help` metadata is also its `--help` text."""

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

__all__ = ["ServeConfig", "add_config_arguments", "config_from_args", "demo_model_dirs", "is_loopback"]


def _f(default: object, help: str, **kw: object) -> object:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ServeConfig:
    models: list[str] = field(default_factory=list, metadata={
        "help": "checkpoint or ONNX export directory to serve, as PATH, NAME=PATH or NAME=PATH,max_queue=8,... "
                "(per-model batching options; repeatable); none: every model directory under models/",
        "flag": "--model"})
    host: str = _f("127.0.0.1", "address to bind (0.0.0.0 inside a container)")
    port: int = _f(8000, "port to bind")
    backend: Literal["auto", "torch", "onnx"] = _f(
        "auto", "auto: onnxruntime for export directories, PyTorch for checkpoint directories")
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "auto: CUDA when present, else CPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "PyTorch weights dtype; auto: bf16 (else fp16) on CUDA, fp32 on CPU")
    threads: int = _f(0, "intra-op threads for PyTorch and onnxruntime (0: the library default)")
    max_batch_size: int = _f(32, "most inputs in one forward pass")
    max_batch_tokens: int = _f(16384, "text: most padded tokens in one forward pass (batch x longest)")
    max_batch_samples: int = _f(16000 * 64, "audio: most padded samples in one forward pass (batch x longest)")
    max_batch_images: int = _f(64, "images: most images in one forward pass")
    max_padding: float = _f(0.3, "text/audio: most share of a padded batch that may be padding; longer inputs "
                            "start another batch")
    max_wait_ms: float = _f(5.0, "longest time the first queued input waits for others to fill its batch")
    max_queue: int = _f(512, "most inputs per model being decoded, queued or run; beyond it requests get 429 "
                        "at once")
    retry_after_s: int = _f(1, "the Retry-After header of 429 answers")
    api_key: str | None = _f(None, "require 'Authorization: Bearer KEY' (default: $D2V_API_KEY; "
                             "/health, /ready and /metrics stay open)")
    max_payload_bytes: int = _f(16 * 1024 * 1024, "largest request body (413 above)")
    max_inputs: int = _f(64, "most inputs in one request (413 above)")
    max_tokens: int = _f(0, "most tokens per text input (0: the model's limit); longer text is truncated or 413")
    max_audio_seconds: float = _f(60.0, "longest audio input in seconds (413 above)")
    max_pixels: int = _f(40_000_000, "largest image in pixels, checked before decoding (413 above)")
    decode_workers: int = _f(2, "threads that decode images, audio and text off the event loop")
    health_timeout_s: float = _f(10.0, "/health fails when a model's forward pass takes longer")
    health_cache_s: float = _f(1.0, "/health reuses its last result for this long (and concurrent polls share "
                               "one check), so polling cannot multiply forward passes")
    drain_seconds: float = _f(30.0, "on SIGTERM, how long in-flight requests may take to finish")
    limit_concurrency: int = _f(1000, "most open connections (and requests in progress); a request beyond gets 503 "
                                "at once. The soft open-files limit is raised to fit at start (0: as many as it allows)")
    header_timeout_s: float = _f(10.0, "a request's headers must arrive within this many seconds of its first byte "
                                 "(or of the connection opening); slower connections are closed")
    body_timeout_s: float = _f(60.0, "a request's body must arrive within this many seconds of its headers; "
                               "slower connections are closed")
    keep_alive_timeout_s: int = _f(5, "close a kept-alive connection idle this many seconds")
    max_header_bytes: int = _f(65536, "largest request line and headers (431 above)")
    allowed_hosts: str | None = _f(None, "comma-separated names the Host header may carry ('*': any, '*.example.com': "
                                   "its subdomains); others get 400, which stops DNS rebinding. Default: localhost, "
                                   "127.0.0.1 and ::1 when bound to a loopback address, else any")
    cors_origins: str | None = _f(None, "comma-separated origins whose web pages may call the API from a browser "
                                  "(CORS; '*': any). Default: none")
    warmup: bool = _f(True, "run every model (batch of one and a padded batch) before accepting requests")

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get("D2V_API_KEY") or None

    def problem(self) -> str | None:
        """What is wrong with the connection settings, if anything (for a one-line CLI error)."""
        for name in ("limit_concurrency", "health_cache_s"):
            if getattr(self, name) < 0:
                return f"--{name.replace('_', '-')} must be 0 or more"
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_timeout_s", "max_header_bytes"):
            if getattr(self, name) <= 0:
                return f"--{name.replace('_', '-')} must be more than 0"
        return None

    def host_names(self) -> list[str]:
        """The Host header values accepted (without port): `allowed_hosts`, or its default."""
        if self.allowed_hosts:
            return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
        if is_loopback(self.host):
            return ["localhost", "127.0.0.1", "::1"]
        return ["*"]

    def origins(self) -> list[str]:
        """The CORS origins allowed (none by default)."""
        return [o.strip().rstrip("/") for o in (self.cors_origins or "").split(",") if o.strip()]


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_config_arguments(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One flag per `ServeConfig` field (or per field named in `only`)."""
    for f in fields(ServeConfig):
        if only is not None and f.name not in only:
            continue
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        help_text = f.metadata["help"]
        if f.name == "models":
            parser.add_argument(flag, dest=f.name, action="append", default=[], metavar="PATH", help=help_text)
        elif f.type is bool or f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        else:
            choices = getattr(f.type, "__args__", None) if "Literal" in str(f.type) else None
            kind = {int: int, float: float}.get(f.type, str)
            parser.add_argument(flag, dest=f.name, type=kind, default=f.default, choices=choices,
                                help=f"{help_text} (default: {f.default})")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(**{f.name: getattr(args, f.name) for f in fields(ServeConfig)})


def demo_model_dirs() -> list[Path]:
    """The bundled demo models: every directory with a config.json under `models/`, looked up first
    in the current directory, then beside the installed package (a source checkout)."""
    import d2v

    for root in (Path.cwd() / "models", Path(d2v.__file__).resolve().parents[1] / "models"):
        found = sorted(p for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []
        if found:
            return found
    return []

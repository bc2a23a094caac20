"""`ServeConfig`: every knob of `d2v serve`, one typed dataclass. The command line is generated from
its fields (`d2v.configuration`), so the docstring under a field is also its `--help` text."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["ServeConfig", "demo_model_dirs", "is_loopback"]


@dataclass
class ServeConfig:
    """Every setting of `d2v serve`; `d2v embed` shares the engine's (`ENGINE_FIELDS`)."""

    models: list[str] = field(
        default_factory=list, metadata={"flag": "--model", "metavar": "PATH", "repeat": True})
    """checkpoint or ONNX export directory to serve, as PATH, NAME=PATH or NAME=PATH,max_queue=8,...
    (per-model batching options; repeatable); none: every model directory under models/"""
    host: str = "127.0.0.1"
    """address to bind (0.0.0.0 inside a container)"""
    port: int = 8000
    """port to bind"""
    backend: Literal["auto", "torch", "onnx"] = "auto"
    """auto: onnxruntime for export directories, PyTorch for checkpoint directories"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present, else CPU"""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """PyTorch weights dtype; auto: bf16 (else fp16) on CUDA, fp32 on CPU. bf16/fp16 on CPU is checked
    against fp32 at load (--min-cosine); bf16 is slow on CPUs without AVX512-BF16/AMX (warned)"""
    quantize: Literal["none", "int8"] = "none"
    """int8: dynamic int8 linear layers on CPU (exports: an int8 copy in --cache-dir, the export untouched;
    checkpoints: torch's dynamic quantization), checked against fp32 at load (--min-cosine)"""
    min_cosine: float = 0.99
    """reduced precision on CPU (--dtype bfloat16/float16, --quantize int8) is refused at load when any
    output on the check inputs has cosine below this to fp32 (0: no check)"""
    cache_dir: str | None = None
    """where --quantize int8 keeps int8 copies of exports (default: $D2V_CACHE_DIR, else
    $XDG_CACHE_HOME/d2v, else ~/.cache/d2v)"""
    threads: int = 0
    """intra-op threads for PyTorch and onnxruntime (0: the library default)"""
    lanes: int = 0
    """forward passes of one model run at once, sharing its intra-op threads (a pass that starts while
    another runs gets its share); 0: auto, for PyTorch on a CPU with 2 or more threads 3 for audio and
    2 for images and text, else 1"""
    workers: int = 1
    """serving processes sharing the port, each loading every model (a supervisor restarts one that dies;
    SIGTERM drains all); /health answers for the process that takes the connection, /metrics for all"""
    max_batch_size: int = 32
    """most inputs in one forward pass"""
    max_batch_tokens: int = 16384
    """text: most padded tokens in one forward pass (batch x longest)"""
    max_batch_samples: int = 0
    """audio: most padded samples in one forward pass (batch x longest); 0: 16000 x 10 on CPU (where large padded
    batches of long clips serve fewer clips/s), 16000 x 64 on a GPU"""
    max_batch_images: int = 64
    """images: most images in one forward pass"""
    max_padding: float = 0.3
    """text/audio: most share of a padded batch that may be padding; longer inputs start another batch"""
    max_wait_ms: float = 0.0
    """extra time an idle model waits after the first queued input for others to fill its batch (0: run at
    once; inputs that arrive while a batch runs always form the next batch)"""
    max_queue: int = 512
    """most inputs per model being decoded, queued or run; beyond it requests get 429 at once"""
    retry_after_s: int = 1
    """the Retry-After header of 429 answers"""
    api_key: str | None = None
    """require 'Authorization: Bearer KEY' (default: $D2V_API_KEY; /health, /ready and /metrics stay open)"""
    max_payload_bytes: int = 16 * 1024 * 1024
    """largest request body (413 above)"""
    max_inputs: int = 64
    """most inputs in one request (413 above)"""
    max_tokens: int = 0
    """most tokens per text input (0: the model's limit); longer text is truncated or 413"""
    max_audio_seconds: float = 60.0
    """longest audio input in seconds (413 above)"""
    max_pixels: int = 40_000_000
    """largest image in pixels, checked before decoding (413 above)"""
    decode_workers: int = 2
    """threads that decode images, audio and text off the event loop"""
    health_timeout_s: float = 10.0
    """/health fails when a model's forward pass takes longer"""
    health_cache_s: float = 1.0
    """/health reuses its last result for this long (and concurrent polls share one check), so polling cannot
    multiply forward passes"""
    drain_seconds: float = 30.0
    """on SIGTERM, how long in-flight requests may take to finish"""
    limit_concurrency: int = 1000
    """most open connections (and requests in progress); a request beyond gets 503 at once. The soft
    open-files limit is raised to fit at start (0: as many as it allows)"""
    header_timeout_s: float = 10.0
    """a request's headers must arrive within this many seconds of its first byte (or of the connection
    opening); slower connections are closed"""
    body_timeout_s: float = 60.0
    """a request's body must arrive within this many seconds of its headers; slower connections are closed"""
    keep_alive_timeout_s: int = 5
    """close a kept-alive connection idle this many seconds"""
    max_header_bytes: int = 65536
    """largest request line and headers (431 above)"""
    allowed_hosts: str | None = None
    """comma-separated names the Host header may carry ('*': any, '*.example.com': its subdomains); others get
    400, which stops DNS rebinding. Default: localhost, 127.0.0.1 and ::1 when bound to a loopback address,
    else any"""
    cors_origins: str | None = None
    """comma-separated origins whose web pages may call the API from a browser (CORS; '*': any). Default:
    none"""
    warmup: bool = True
    """run every model (batch of one and a padded batch) before accepting requests"""
    playground: bool | None = None
    """serve the playground page at / (its own files open without the API key; its API calls still need
    it). Default: on without --api-key, off with one"""

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get("D2V_API_KEY") or None

    def problem(self) -> str | None:
        """What is wrong with the connection settings, if anything (for a one-line CLI error)."""
        if self.workers < 1:
            return "--workers must be 1 or more"
        if self.lanes < 0:
            return "--lanes must be 0 (auto) or more"
        if not 0 <= self.min_cosine <= 1:
            return "--min-cosine must be between 0 and 1"
        for name in ("limit_concurrency", "health_cache_s"):
            if getattr(self, name) < 0:
                return f"--{name.replace('_', '-')} must be 0 or more"
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_timeout_s", "max_header_bytes"):
            if getattr(self, name) <= 0:
                return f"--{name.replace('_', '-')} must be more than 0"
        return None

    def playground_on(self) -> bool:
        """Whether `/` serves the playground page: `playground`, or by default only without an API key."""
        return self.playground if self.playground is not None else not self.api_key

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


def demo_model_dirs() -> list[Path]:
    """The bundled demo models: every directory with a config.json under `models/`, looked up first
    in the current directory, then beside the installed package (a source checkout)."""
    import d2v

    for root in (Path.cwd() / "models", Path(d2v.__file__).resolve().parents[1] / "models"):
        found = sorted(p for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []
        if found:
            return found
    return []

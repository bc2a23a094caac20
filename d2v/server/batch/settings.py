"""Plain constants of `d2v embed` that its command line needs (`command`) and the job uses (`job`,
`inputs`); a module of their own so that building the command line imports neither numpy nor pyarrow."""

__all__ = ["ENGINE_FIELDS", "MAX_FILE_BYTES"]

ENGINE_FIELDS = ("backend", "device", "dtype", "threads", "max_batch_size", "max_batch_tokens", "max_batch_samples",
                 "max_batch_images", "max_padding", "max_wait_ms", "lanes", "max_tokens", "max_audio_seconds", "max_pixels",
                 "decode_workers")
"""The `d2v serve` settings (ServeConfig fields) that a job shares: backend, device, batching and input limits."""

MAX_FILE_BYTES = 256 * 1024 * 1024
"""The default per-file limit: far above any image under the pixel limit or audio under the duration
limit, and a bound on what one decode thread holds."""

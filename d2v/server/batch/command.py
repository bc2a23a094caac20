"""The `d2v embed` command line."""

import argparse
import sys

from d2v.configuration import add_arguments
from d2v.server.batch.settings import ENGINE_FIELDS, MAX_FILE_BYTES
from d2v.server.config import ServeConfig

__all__ = ["add_embed_arguments", "run_embed"]


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint or ONNX export directory")
    p.add_argument("--input", required=True,
                   help="a directory (its files of the model's modality, recursively), a JSONL manifest (.jsonl: "
                        "'id' and 'path' or 'text' per line) or, for text models, a text file (one document per line)")
    p.add_argument("--output", required=True, help="output directory; run the same command again to resume")
    p.add_argument("--task", choices=["embed", "transcribe"], default="embed",
                   help="embed (embeddings.parquet), or transcribe: a speech recognizer's (CTC model's) greedy "
                        "transcripts of audio files (transcripts.parquet: id, source, text) (default: embed)")
    p.add_argument("--pooling", choices=["mean", "cls"], default=None, help="default: the model's own")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                   help="L2-normalize (after --dimensions) (default: on)")
    p.add_argument("--dimensions", type=int, default=None, help="keep the first N dimensions")
    p.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=True,
                   help="cut text longer than the token limit (else the input fails) (default: on)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="take the inputs of shard I of N (0 <= I < N); default: torchrun's RANK/WORLD_SIZE, else 0/1")
    p.add_argument("--retry-failed", action="store_true", help="try the inputs that failed in earlier runs again")
    p.add_argument("--redo-changed", action="store_true",
                   help="embed again the inputs that changed (other text, or a file of another size or modification "
                        "time) since --output embedded them; without it such a run is refused")
    p.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES, metavar="N",
                   help=f"larger files fail, each on its own (default: {MAX_FILE_BYTES} = 256 MiB); only regular "
                        "files are read (FIFOs, devices and directories fail)")
    p.add_argument("--npy", action="store_true",
                   help="also write embeddings.npy (N, D float32) and index.jsonl (row, id, source) when done")
    p.add_argument("--part-rows", type=int, default=4096, help="commit a part every N results (default: 4096)")
    p.add_argument("--part-seconds", type=float, default=60.0,
                   help="... or every S seconds, whichever comes first (default: 60)")
    p.add_argument("--in-flight", type=int, default=0,
                   help="inputs read, decoded or queued at once (default: four batches' worth)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    add_arguments(p.add_argument_group("engine (as d2v serve)"), ServeConfig, only=ENGINE_FIELDS, switches=True)


def run_embed(args: argparse.Namespace) -> int:
    """Run the job; one line on stderr for what went wrong, never a traceback for a known failure.
    Exit status: 0 done (or this shard done), 1 the output could not be written (a full disk: run
    again later) or the parts could not be merged, 2 a usage error (the model, the input, the
    output, the settings), 130 interrupted."""
    from d2v.server.backends.base import BackendError
    from d2v.server.batch.job import job_from_args, run_embed_job
    from d2v.server.batch.sources import SourceError
    from d2v.server.batch.store import JobMismatch, MergeError, OutputError
    from d2v.server.engine import BadRequest

    try:
        summary = run_embed_job(job_from_args(args))
    except OutputError as e:
        print(f"d2v embed: {e}", file=sys.stderr)
        return 2 if e.usage else 1
    except MergeError as e:
        print(f"d2v embed: {e}", file=sys.stderr)
        return 1
    except (BackendError, BadRequest, JobMismatch, SourceError, FileNotFoundError, ValueError) as e:
        print(f"d2v embed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("d2v embed: interrupted; what finished is committed, run the same command to go on", file=sys.stderr)
        return 130
    print(f"d2v embed: {summary.line()}", file=sys.stderr)
    if summary.failed:
        print(f"d2v embed: the failed inputs and why: {args.output}/"
              + ("errors.jsonl" if summary.merged else "parts/*.errors.jsonl"), file=sys.stderr)
    if not summary.merged:
        print("d2v embed: other shards' inputs (or inputs changed during the run) are not done yet; the run that "
              "finds every input done merges the parts", file=sys.stderr)
    return 0

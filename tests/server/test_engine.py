"""The batching engine against a dummy backend: batches by budget and size, sorted by length; results
independent of batching; a bad input fails only its request; a full queue refuses at once; health
runs the model; the engine never imports FastAPI."""

import asyncio
import contextlib
import subprocess
import sys
import threading

import numpy as np
import pytest
from dummy import DummyBackend, DummyDecoder

from d2v.server.config import ServeConfig
from d2v.server.decode import Decoded
from d2v.server.engine import (
    BadRequest,
    Engine,
    InferenceError,
    NotReady,
    Overloaded,
    UnknownModel,
    finish_embeddings,
    parse_model_spec,
    top_predictions,
)


def make_engine(**kw) -> tuple[Engine, DummyBackend]:
    backend = DummyBackend(delay=kw.pop("delay", 0.0), labels=["a", "b", "c"])
    cfg = ServeConfig(**{"max_wait_ms": 20, "decode_workers": 1, **kw})
    engine = Engine(cfg, [backend], decoders={"dummy": DummyDecoder()})
    return engine, backend


def ids(n: int, start: int = 5) -> Decoded:
    x = np.array([0, *range(start, start + n), 2], np.int64)
    return Decoded(x, len(x), len(x))


def run(coro):
    return asyncio.run(coro)


def test_batches_respect_budget_size_and_sort_by_length():
    async def main():
        engine, backend = make_engine(max_batch_tokens=40, max_batch_size=3, max_wait_ms=50)
        await engine.start()
        backend.batches.clear()
        w = engine.workers["dummy"]
        lengths = [2, 18, 3, 17, 4, 16, 5]
        outs = await asyncio.gather(*(engine.embed(w, [ids(n)]) for n in lengths))
        await engine.stop()
        return backend.batches, outs

    batches, outs = run(main())
    assert sorted(n for b in batches for n in b) == sorted(n + 2 for n in [2, 18, 3, 17, 4, 16, 5])
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(b) <= 40)
        assert b == sorted(b)
    assert len(batches) < 7  # batching happened
    for n, o in zip([2, 18, 3, 17, 4, 16, 5], outs, strict=True):
        assert o.values[0][1] == n + 2  # each request got its own row back


def test_results_do_not_depend_on_batching():
    async def main():
        engine, _ = make_engine(max_wait_ms=30)
        await engine.start()
        w = engine.workers["dummy"]
        alone = [(await engine.embed(w, [ids(n, n)])).values[0] for n in range(1, 12)]
        together = await asyncio.gather(*(engine.embed(w, [ids(n, n)]) for n in range(1, 12)))
        await engine.stop()
        return alone, [o.values[0] for o in together]

    alone, together = run(main())
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_bad_input_fails_only_its_request():
    async def main():
        engine, _ = make_engine(max_wait_ms=50)
        await engine.start()
        w = engine.workers["dummy"]
        poison = Decoded(np.array([0, 99, 2], np.int64), 3, 3)
        reqs = [engine.embed(w, [ids(4)]), engine.embed(w, [poison]), engine.embed(w, [ids(6), ids(2)])]
        out = await asyncio.gather(*reqs, return_exceptions=True)
        await engine.stop()
        return out

    good1, bad, good2 = run(main())
    assert isinstance(bad, InferenceError) and "poison" in str(bad)
    assert good1.values[0][1] == 6 and [v[1] for v in good2.values] == [8, 4]


def test_full_queue_refuses_at_once():
    async def main():
        engine, backend = make_engine(max_queue=4)
        await engine.start()
        backend.running.clear()
        backend.gate = threading.Event()
        w = engine.workers["dummy"]
        first = asyncio.ensure_future(engine.embed(w, [ids(3)] * 3))
        await asyncio.to_thread(backend.running.wait, 30)  # its batch runs, held at the gate
        with pytest.raises(Overloaded) as e:
            await engine.embed(w, [ids(3)] * 2)
        refused_while_running = not first.done()
        backend.gate.set()
        assert e.value.retry_after == 1
        assert refused_while_running  # at once, not after the queue drained
        assert len((await first).values) == 3
        assert len((await engine.embed(w, [ids(3)] * 4)).values) == 4  # the queue emptied
        await engine.stop()

    run(main())


def test_health_runs_the_model_and_reports_failure():
    async def main():
        engine, backend = make_engine(health_cache_s=0)
        await engine.start()
        ok = await engine.health()
        backend.broken = True
        broken = await engine.health()
        await engine.stop()
        return ok, broken

    ok, broken = run(main())
    assert ok == {"dummy": "ok"}
    assert "out of memory" in broken["dummy"]


def test_resolve_and_request_checks():
    engine, _ = make_engine()
    w = engine.workers["dummy"]
    assert engine.resolve(None, None) is w and engine.resolve(None, "text") is w and engine.resolve("dummy", None) is w
    with pytest.raises(UnknownModel):
        engine.resolve("nope", None)
    with pytest.raises(UnknownModel):
        engine.resolve(None, "image")
    with pytest.raises(BadRequest):
        engine.resolve("dummy", "audio")

    async def main():
        await engine.start()
        with pytest.raises(BadRequest, match="dimensions"):
            await engine.embed(w, [ids(2)], dimensions=9)
        await engine.stop()

    run(main())


def test_drain_finishes_queued_requests():
    async def main():
        engine, _ = make_engine(max_wait_ms=100)
        await engine.start()
        w = engine.workers["dummy"]
        pending = [asyncio.ensure_future(engine.embed(w, [ids(n)])) for n in range(1, 6)]
        while w.queued < 5:  # all admitted before the engine stops taking requests
            await asyncio.sleep(0.001)
        await engine.stop(drain_s=5)
        return [len(p.result().values) for p in pending]

    assert run(main()) == [1] * 5


def test_postprocessing():
    v = [np.array([3.0, 4.0, 12.0], np.float32)]
    np.testing.assert_allclose(finish_embeddings(v, 2, True), [[0.6, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(finish_embeddings(v, None, False), [[3, 4, 12]])
    preds = top_predictions(np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], 2)
    assert [p["label"] for p in preds] == ["b", "c"] and preds[0]["score"] > preds[1]["score"]
    assert parse_model_spec("x=/m/a,max_queue=4,max_wait_ms=2.5") == ("x", "/m/a", {"max_queue": 4, "max_wait_ms": 2.5})
    assert parse_model_spec("/m/a") == (None, "/m/a", {})
    with pytest.raises(ValueError, match="per-model options"):
        parse_model_spec("/m/a,colour=blue")


def test_engine_never_imports_fastapi():
    code = ("import sys; sys.modules['fastapi'] = None; sys.modules['starlette'] = None; "
            "import d2v.server, d2v.server.engine, d2v.server.backends")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_inputs_of_very_different_lengths_are_not_padded_together():
    async def main():
        engine, backend = make_engine(max_wait_ms=50, max_padding=0.3)
        await engine.start()
        backend.batches.clear()
        w = engine.workers["dummy"]
        await asyncio.gather(*(engine.embed(w, [ids(n)]) for n in (3, 4, 40, 42, 5)))
        await engine.stop()
        return backend.batches

    batches = run(main())
    assert sorted(batches) == [[5, 6, 7], [42, 44]]


def break_the_loop_once(worker) -> None:
    """Fault injection: the batching loop's next cycle raises (a bug in batching, not in the model)."""
    real = worker._batches

    def broken(items):
        worker._batches = real
        raise RuntimeError("bug in the batcher (simulated)")

    worker._batches = broken


def test_a_crashed_batching_loop_fails_its_requests_is_reported_and_restarts():
    async def main():
        engine, _ = make_engine(max_wait_ms=20, health_cache_s=0)
        await engine.start()
        w = engine.workers["dummy"]
        break_the_loop_once(w)
        reqs = [engine.embed(w, [ids(3)]), engine.embed(w, [ids(4), ids(5)])]
        # a hang guard only: the requests fail as soon as the loop dies
        failed = await asyncio.wait_for(asyncio.gather(*reqs, return_exceptions=True), 60)
        assert w.queued == 0
        health = await engine.health()  # the crash is reported, once
        after = await asyncio.wait_for(engine.embed(w, [ids(3)]), 60)  # the restarted loop answers
        healthy_again = await engine.health()
        await engine.stop()
        return failed, health, after, healthy_again, engine.metrics.render().decode()

    failed, health, after, healthy_again, metrics = run(main())
    for e in failed:
        assert isinstance(e, NotReady) and "batching loop" in str(e) and "bug in the batcher" in str(e)
    assert "crashed" in health["dummy"] and "RuntimeError" in health["dummy"]
    assert after.values[0][1] == 5
    assert healthy_again == {"dummy": "ok"}
    assert 'd2v_batcher_restarts_total{model="dummy"} 1.0' in metrics


def test_health_goes_through_the_queue():
    """A dead batching loop makes /health fail, even though the backend itself still works."""
    async def main():
        engine, _ = make_engine(health_cache_s=0, health_timeout_s=2)
        await engine.start()
        w = engine.workers["dummy"]
        w._task.cancel()  # the loop is gone (no restart: it was cancelled, not crashed)
        with contextlib.suppress(asyncio.CancelledError):
            await w._task
        status = await engine.health()
        await engine.stop()
        return status

    status = run(main())
    assert status["dummy"] != "ok"


def test_health_is_cached_and_shared_by_concurrent_callers():
    async def main():
        engine, backend = make_engine(health_cache_s=60)
        await engine.start()
        before = len(backend.batches)
        first = await asyncio.gather(*(engine.health() for _ in range(20)))
        once = len(backend.batches) - before
        again = await asyncio.gather(*(engine.health() for _ in range(20)))
        await engine.stop()
        return first + again, once, len(backend.batches) - before

    results, once, total = run(main())
    assert all(r == {"dummy": "ok"} for r in results)
    assert once == 1 and total == 1  # 40 health calls, one forward pass


async def _started(backend: DummyBackend) -> None:
    """Until a batch is in the backend (the event is set by its thread); fails after 30 s."""
    if not await asyncio.to_thread(backend.running.wait, 30):
        raise AssertionError("no batch started")


async def _hold_a_first_request(engine: Engine, backend: DummyBackend) -> asyncio.Future:
    """Gate the backend, send one request of 3 ids and wait until its batch runs, held at the gate;
    the records of earlier batches are cleared."""
    backend.batches.clear()
    backend.lanes_seen.clear()
    backend.running.clear()
    backend.gate = threading.Event()
    first = asyncio.ensure_future(engine.embed(engine.workers["dummy"], [ids(3)]))
    await _started(backend)
    return first


def test_an_idle_model_runs_a_lone_request_at_once_and_batches_what_arrives_meanwhile():
    """Continuous batching with the default settings: a request on an idle model is its own batch,
    started before anything else is sent; two requests sent while it runs form the next batch."""
    async def main():
        engine, backend = make_engine(max_wait_ms=ServeConfig.max_wait_ms)
        await engine.start()
        w = engine.workers["dummy"]
        backend.batches.clear()
        backend.running.clear()
        backend.gate = threading.Event()
        first = asyncio.ensure_future(engine.embed(w, [ids(3)]))
        await _started(backend)  # alone, with nothing else queued: it did not wait for company
        later = [asyncio.ensure_future(engine.embed(w, [ids(n)])) for n in (4, 5)]
        while len(w.pending) < 2:  # both queued behind the running batch
            await asyncio.sleep(0)
        backend.gate.set()
        outs = [await first] + [await f for f in later]
        await engine.stop()
        return backend.batches, outs

    batches, outs = run(main())
    assert ServeConfig.max_wait_ms == 0
    assert batches == [[5], [6, 7]]
    assert [o.values[0][1] for o in outs] == [5, 6, 7]


def test_max_wait_ms_makes_an_idle_model_wait_for_company_until_a_batch_is_full():
    """max_wait_ms > 0: the first input waits for others, and a full batch ends the wait early (a
    wait of a minute that does not happen: the test would time out)."""
    async def main():
        engine, backend = make_engine(max_wait_ms=60_000, max_batch_size=2)
        await engine.start()
        w = engine.workers["dummy"]
        backend.batches.clear()
        first = asyncio.ensure_future(engine.embed(w, [ids(3)]))
        while len(w.pending) < 1:
            await asyncio.sleep(0)
        second = asyncio.ensure_future(engine.embed(w, [ids(4)]))
        outs = await asyncio.wait_for(asyncio.gather(first, second), 30)
        await engine.stop()
        return backend.batches, outs

    batches, outs = run(main())
    assert batches == [[5, 6]]
    assert [o.values[0][1] for o in outs] == [5, 6]


def test_short_text_is_decoded_on_the_event_loop_and_the_rest_in_the_decode_pool():
    """A decoder that declares `inline_chars` (text: cheap native tokenizers) is called on the loop's
    thread for requests up to that many characters, saving two thread hops; longer ones and decoders
    without it (media) go to the decode pool."""
    class Recording(DummyDecoder):
        def __init__(self, inline_chars: int):
            self.inline_chars, self.threads = inline_chars, []

        def __call__(self, value, index, truncate=True, content_type=None):
            self.threads.append(threading.current_thread().name)
            return super().__call__(value[:10], index, truncate, content_type)

    async def main(decoder):
        cfg = ServeConfig(decode_workers=1)
        engine = Engine(cfg, [DummyBackend(labels=["a"])], decoders={"dummy": decoder})
        await engine.start()
        w = engine.workers["dummy"]
        for text in ("short", "x" * 40):
            decoded, _ = await engine.decode(w, [text])
            await engine.embed(w, decoded)
        await engine.stop()
        return decoder.threads

    loop_thread = threading.current_thread().name
    inline = run(main(Recording(inline_chars=20)))
    assert inline[0] == loop_thread and inline[1].startswith("d2v-decode")
    assert all(t.startswith("d2v-decode") for t in run(main(Recording(inline_chars=0))))


def test_the_default_audio_budget_is_smaller_on_cpu_than_on_a_gpu():
    """max_batch_samples 0 (the default): 10 s of 16 kHz audio per padded batch on CPU, 64 s elsewhere;
    a value given is kept."""
    from d2v.server.engine import ModelWorker
    from d2v.server.metrics import PrometheusMetrics

    class Audio(DummyBackend):
        modality = "audio"

    def budget(device: str, **kw) -> int:
        backend = Audio()
        backend.modality, backend.device = "audio", device
        return ModelWorker(backend, DummyDecoder(), ServeConfig(**kw), PrometheusMetrics()).budget

    assert ServeConfig().max_batch_samples == 0
    assert budget("cpu") == 160_000 and budget("cpu (float32)") == 160_000
    assert budget("cuda") == budget("cuda (bfloat16)") == 1_024_000
    assert budget("cpu", max_batch_samples=48_000) == 48_000


def test_lanes_run_batches_side_by_side_each_on_its_share_of_the_threads():
    """Two lanes: two requests arriving while a batch runs start at once in the free lane (one batch
    of two, not waiting for the first); four arriving at an idle model are cut into two batches (the
    short half and the long half) that run side by side on two of the four threads each."""
    async def main():
        engine, backend = make_engine(max_wait_ms=0, lanes=2)
        backend.threads = 4
        await engine.start()
        w = engine.workers["dummy"]
        assert w.lanes == 2
        first = await _hold_a_first_request(engine, backend)
        backend.running.clear()
        second = [asyncio.ensure_future(engine.embed(w, [ids(n)])) for n in (4, 5)]
        await _started(backend)  # started while the first still runs: a second lane
        while len(backend.lanes_seen) < 2:
            await asyncio.sleep(0)
        both_running = len(w.running) == 2
        backend.gate.set()
        outs = [await first] + [await f for f in second]
        # four at once on an idle model with two free lanes: two batches, sorted halves, side by side
        backend.gate = threading.Event()
        backend.lanes_seen.clear()
        backend.batches.clear()
        together = [asyncio.ensure_future(engine.embed(w, [ids(n)])) for n in (9, 2, 8, 3)]
        while len(backend.lanes_seen) < 2:
            await asyncio.sleep(0.001)
        backend.gate.set()
        outs2 = [await f for f in together]
        await engine.stop()
        return both_running, backend, outs, outs2

    both_running, backend, outs, outs2 = run(main())
    assert both_running
    assert [o.values[0][1] for o in outs] == [5, 6, 7]
    assert [o.values[0][1] for o in outs2] == [11, 4, 10, 5]
    assert sorted(backend.batches) == [[4, 5], [10, 11]]  # the short half and the long half
    assert sorted(backend.lanes_seen) == [(2, 1), (2, 2)]  # two threads each, both lanes busy


def test_the_first_lone_pass_uses_every_thread_and_one_started_beside_it_its_share():
    async def main():
        engine, backend = make_engine(max_wait_ms=0, lanes=2)
        w = engine.workers["dummy"]
        backend.threads = 4
        await engine.start()
        first = await _hold_a_first_request(engine, backend)
        second = asyncio.ensure_future(engine.embed(w, [ids(4)]))
        while len(backend.lanes_seen) < 2:
            await asyncio.sleep(0.001)
        backend.gate.set()
        await first, await second
        await engine.stop()
        return backend.lanes_seen

    assert run(main()) == [(4, 1), (2, 2)]


def test_the_oldest_queued_input_is_in_the_next_batch_whatever_its_length():
    """Cutting sorts by length, but batches start oldest first: a long input queued before many
    short ones is not passed over by them."""
    async def main():
        engine, backend = make_engine(max_wait_ms=0, lanes=1, max_padding=0.3)
        await engine.start()
        w = engine.workers["dummy"]
        first = await _hold_a_first_request(engine, backend)
        long = asyncio.ensure_future(engine.embed(w, [ids(12)]))
        while len(w.pending) < 1:
            await asyncio.sleep(0)
        short = [asyncio.ensure_future(engine.embed(w, [ids(2)])) for _ in range(3)]
        while len(w.pending) < 4:
            await asyncio.sleep(0)
        backend.gate.set()
        await first, await long, [await f for f in short]
        await engine.stop()
        return backend.batches

    assert run(main()) == [[5], [14], [4, 4, 4]]


def test_lanes_are_checked():
    assert parse_model_spec("/m/a,lanes=3") == (None, "/m/a", {"lanes": 3})
    with pytest.raises(ValueError, match="lanes must be 0 or more"):
        parse_model_spec("/m/a,lanes=-1")
    assert ServeConfig(lanes=-1).problem() == "--lanes must be 0 (auto) or more"
    with pytest.raises(ValueError, match="lanes must be 0"):
        make_engine(lanes=-2)
    engine, _ = make_engine()
    assert engine.workers["dummy"].lanes == 1  # auto: a backend that cannot share threads runs one pass

"""Deterministic data order: batches are a function of (seed, step), disjoint across processes,
and cover every example each epoch."""

from d2v.training.data.sampler import EpochBatches, PretrainBatches, derive_seed


def test_batches_depend_only_on_seed_and_step():
    full = list(PretrainBatches(50, 4, 20, seed=3))
    resumed = list(PretrainBatches(50, 4, 20, seed=3, start_step=12))
    assert resumed == full[12:]
    assert list(PretrainBatches(50, 4, 20, seed=4)) != full
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)


def test_epochs_cover_every_example():
    batches = list(PretrainBatches(12, 4, 6, seed=0))  # two epochs of 12
    first = [i for b in batches[:3] for i, _ in b]
    second = [i for b in batches[3:] for i, _ in b]
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != second  # each epoch is reshuffled
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds)  # every draw has its own augmentation seed


def test_processes_and_accumulation_split_the_stream():
    single = list(PretrainBatches(40, 2, 5, seed=1, grad_accum=2))
    ranks = [list(PretrainBatches(40, 1, 5, seed=1, grad_accum=2, world_size=2, rank=r)) for r in range(2)]
    assert len(single) == 10 and all(len(r) == 10 for r in ranks)
    for i in range(10):  # each micro-batch of the single run is the two processes' halves
        assert single[i] == ranks[0][i] + ranks[1][i]


def test_epoch_batches_shard_evenly():
    shards = [list(EpochBatches(10, 3, seed=0, epoch=1, train=True, world_size=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    seen = [i for s in shards for b in s for i, _ in b]
    assert set(seen) == set(range(10)) and len(seen) == 12  # padded by wrapping around
    evaluation = [list(EpochBatches(10, 3, seed=0, epoch=0, train=False, world_size=3, rank=r)) for r in range(3)]
    assert sorted(i for s in evaluation for b in s for i, _ in b) == list(range(10))  # no padding
    assert list(EpochBatches(10, 4, 0, 0, True)) != list(EpochBatches(10, 4, 0, 1, True))

"""Data order, splits and padding of the training loop: pure, seeded, rank-aware."""

from itertools import islice

from finetune.train import collate, micro_batches, split


def test_split_is_seeded_disjoint_and_keeps_one_for_training() -> None:
    items = list(range(20))
    train, held = split(items, 0.25, seed=3)
    assert sorted(train + held) == items and len(held) == 5
    assert split(items, 0.25, seed=3) == (train, held)
    assert split(items, 0.25, seed=4) != (train, held)
    assert len(split([1, 2], 0.9, seed=0)[0]) == 1 and split([1, 2], 0.0, seed=0) == ([1, 2], [])


def test_micro_batches_reshuffle_each_epoch_and_cover_every_example() -> None:
    items = list(range(6))
    batches = list(islice(micro_batches(items, 2, seed=1, rank=0, world=1), 6))
    first_epoch, second_epoch = sum(batches[:3], []), sum(batches[3:], [])
    assert sorted(first_epoch) == sorted(second_epoch) == items
    assert first_epoch != second_epoch
    assert list(islice(micro_batches(items, 2, seed=1, rank=0, world=1), 6)) == batches


def test_ranks_take_alternate_micro_batches() -> None:
    items = list(range(8))
    single = list(islice(micro_batches(items, 2, seed=0, rank=0, world=1), 4))
    rank0 = list(islice(micro_batches(items, 2, seed=0, rank=0, world=2), 2))
    rank1 = list(islice(micro_batches(items, 2, seed=0, rank=1, world=2), 2))
    assert rank0 == single[0::2] and rank1 == single[1::2]


def test_collate_pads_ids_masks_and_ignores_padding_in_labels() -> None:
    batch = collate(
        [
            {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "attention_mask": [1, 1, 1]},
            {"input_ids": [8], "labels": [8], "attention_mask": [1]},
        ],
        pad_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]

"""Chat-template encoding: the loss covers the response tokens only."""

from __future__ import annotations

from client.batching import IGNORE, Encoded, batch_stream, collate, encode
from codetasks.examples import Example
from codetasks.prompts import to_response

EXAMPLE = Example(
    task="summarization",
    uid="t/1",
    source="def add(a, b):\n    return a + b",
    target="Add two numbers.",
)


def test_labels_mask_the_prompt_and_keep_the_response(tiny_tokenizer):
    enc = encode(tiny_tokenizer, EXAMPLE, max_length=256)
    first = next(i for i, label in enumerate(enc.labels) if label != IGNORE)
    assert all(label == IGNORE for label in enc.labels[:first])
    assert list(enc.labels[first:]) == list(enc.input_ids[first:])
    answer = tiny_tokenizer.decode(enc.input_ids[first:])
    assert answer.startswith(to_response(EXAMPLE))
    prompt = tiny_tokenizer.decode(enc.input_ids[:first])
    assert "def add(a, b)" in prompt and prompt.rstrip().endswith("assistant")


def test_overlong_prompt_is_dropped(tiny_tokenizer):
    long = Example(task="summarization", uid="t/2", source="x = 1\n" * 400, target="Long.")
    assert encode(tiny_tokenizer, long, max_length=64) is None


def test_collate_pads_right_and_masks_padding(tiny_tokenizer):
    short = encode(tiny_tokenizer, EXAMPLE, 256)
    longer = encode(
        tiny_tokenizer,
        Example(
            task="summarization",
            uid="t/3",
            source="def f():\n    return 1\n" * 3,
            target="Return one.",
        ),
        256,
    )
    batch = collate([short, longer], pad_id=0)
    n = len(short.input_ids)
    assert batch.attention_mask[0, n:].sum() == 0
    assert (batch.labels[0, n:] == IGNORE).all()
    assert batch.tasks == ("summarization", "summarization")


def test_batch_stream_is_seeded(tiny_tokenizer):
    items = [
        encode(
            tiny_tokenizer,
            Example(
                task="summarization", uid=f"t/{i}", source=f"def f{i}(): pass", target=f"F {i}."
            ),
            128,
        )
        for i in range(5)
    ]
    a = [next(batch_stream(items, 2, 0, seed=7)).input_ids.tolist() for _ in range(2)]
    b = next(batch_stream(items, 2, 0, seed=7)).input_ids.tolist()
    assert a[0] == a[1] == b


def _padding(order, lengths, batch_size):
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouping_keeps_every_example_once_and_pads_less():
    import random

    from client.batching import grouped_by_length

    lengths = [(7 * i * i) % 230 + 20 for i in range(50)]
    order = list(range(50))
    random.Random(1).shuffle(order)
    grouped = grouped_by_length(order, lengths, 4, random.Random(2))
    assert sorted(grouped) == list(range(50))
    assert grouped == grouped_by_length(order, lengths, 4, random.Random(2))
    assert _padding(grouped, lengths, 4) < _padding(order, lengths, 4) / 3
    # A batch holds neighbours in length order within its group of 8 batches (32 examples).
    first_group = sorted(order[:32], key=lambda i: -lengths[i])
    batches = [first_group[i : i + 4] for i in range(0, 32, 4)]
    assert all(b in [grouped[i : i + 4] for i in range(0, 48, 4)] for b in batches)


def test_batch_stream_groups_by_length_unless_told_not_to():
    items = [Encoded("generation", tuple(range(5, 5 + n)), tuple(range(5, 5 + n)))
             for n in (10, 80, 12, 78, 11, 79, 13, 81)]  # fmt: skip
    grouped = batch_stream(items, 2, 0, seed=3)
    plain = batch_stream(items, 2, 0, seed=3, group_by_length=False)
    widths = [next(grouped).input_ids.shape[1] for _ in range(4)]
    plain_widths = [next(plain).input_ids.shape[1] for _ in range(4)]
    assert sorted(widths) == [11, 13, 79, 81]  # pairs of neighbours in length order
    assert sum(plain_widths) >= sum(widths)

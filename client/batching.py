"""Tokenise task examples with the model's chat template and batch them for causal-LM training.

The loss covers the response tokens only: prompt positions get label -100. The prompt and the
response are tokenised separately and concatenated, so the boundary is exact whatever the
tokenizer does at the seam.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from codetasks.examples import Example
from codetasks.prompts import to_messages, to_response

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    task: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], IGNORE on prompt and padding
    tasks: tuple[str, ...]


def encode(tokenizer, example: Example, max_length: int) -> Encoded | None:
    """Chat-template an example; None if its prompt alone leaves < 8 tokens for the answer."""
    messages = to_messages(example)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": to_response(example)}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError(f"{example.uid}: the chat template does not extend the prompt")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    if len(prompt_ids) > max_length - 8:
        return None
    answer_ids = answer_ids[: max_length - len(prompt_ids)]
    return Encoded(
        task=example.task,
        input_ids=tuple(prompt_ids + answer_ids),
        labels=tuple([IGNORE] * len(prompt_ids) + answer_ids),
    )


def encode_all(tokenizer, examples: Sequence[Example], max_length: int) -> list[Encoded]:
    encoded = [encode(tokenizer, ex, max_length) for ex in examples]
    return [e for e in encoded if e is not None]


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-pad a list of encoded examples into one batch."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return Batch(ids, mask, labels, tuple(item.task for item in items))


# Batches per length-sorted group: a group of GROUP_BATCHES * batch_size shuffled examples is
# sorted by length and cut into batches, as in HF transformers' LengthGroupedSampler (which
# uses 50). Small enough that the order stays random across a client's few hundred examples.
GROUP_BATCHES = 8


def grouped_by_length(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, rng: random.Random
) -> list[int]:
    """``order`` rearranged so consecutive ``batch_size`` runs hold examples of similar length.

    Each group of ``GROUP_BATCHES`` batches is sorted by length (longest first, ties by
    position), cut into batches, and the batches are shuffled with ``rng``: a batch pads to
    its longest member, so similar lengths waste fewer padded positions. Every index stays
    exactly once, and the result depends only on the inputs and the ``rng`` state.
    """
    span = GROUP_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), span):
        group = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rng.shuffle(full)
    return [i for batch in full for i in batch] + [
        i for b in batches if len(b) < batch_size for i in b
    ]


def batch_stream(
    items: Sequence[Encoded],
    batch_size: int,
    pad_id: int,
    *,
    seed: int,
    group_by_length: bool = True,
) -> Iterator[Batch]:
    """Endless shuffled batches; each pass over the data is reshuffled from ``seed``.

    With ``group_by_length`` each pass is arranged by :func:`grouped_by_length`.
    """
    if not items:
        raise ValueError("no training examples fit max-seq-length; raise train.max-seq-length")
    rng = random.Random(seed)
    lengths = [len(item.input_ids) for item in items]
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            fresh = list(range(len(items)))
            rng.shuffle(fresh)
            if group_by_length:
                fresh = grouped_by_length(fresh, lengths, batch_size, rng)
            order.extend(fresh)
        chunk, order = order[:batch_size], order[batch_size:]
        yield collate([items[i] for i in chunk], pad_id)


def eval_batches(items: Sequence[Encoded], batch_size: int, pad_id: int) -> Iterator[Batch]:
    """Batches in order of length (longest first), so each pads little (a deterministic order:
    the per-task means are the same up to rounding whatever the order)."""
    order = sorted(range(len(items)), key=lambda i: (-len(items[i].input_ids), i))
    for start in range(0, len(order), batch_size):
        yield collate([items[i] for i in order[start : start + batch_size]], pad_id)

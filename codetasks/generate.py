"""Batched generation of model replies for code-task examples, for evaluation.

Prompts are the chat-template prompts of :mod:`codetasks.prompts` (the format the adapters are
trained on). Generation is batched with LEFT padding, so every row's last prompt token sits at
the same position and new tokens are appended right after it, and decodes with the KV cache
(``use_cache=True``; the training code turns the cache off). Decoding is greedy by default, as
for pass@1 in HumanEval (Chen et al. 2021, arXiv 2107.03374) and in the multi-task code study
(arXiv 2601.15094); a temperature > 0 samples instead (FlowerTune's code challenge uses
temperature 0.2, top-p 0.95). Examples are sorted by prompt length so a batch holds prompts of
similar length (less padding), and the replies are returned in the input order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from codetasks.examples import Example
from codetasks.prompts import to_messages

# Reply budgets, in SmolLM2 tokens, from the reference replies: MBPP functions p95 125, max 221
# (a model that restates a HumanEval docstring needs more); CodeXGLUE valid C# p95 211, max 347;
# summaries p95 20, of which only the first sentence is kept.
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {
    "generation": 384,
    "translation": 256,
    "summarization": 48,
}
CHAT_END = "<|im_end|>"  # ChatML end of turn (SmolLM2, Qwen2.5); the EOS of SmolLM2


@dataclass(frozen=True)
class GenerationResult:
    """Decoded replies in input order, with the count of new tokens and the wall time."""

    texts: list[str]
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def chat_prompt(tokenizer, example: Example) -> str:
    """The example's system + user turns with the assistant header opened for the reply."""
    return tokenizer.apply_chat_template(
        to_messages(example), tokenize=False, add_generation_prompt=True
    )


def stop_token_ids(tokenizer) -> list[int]:
    """The EOS id and, when the vocabulary has it, the ChatML end-of-turn id."""
    ids = [tokenizer.eos_token_id]
    chat_end = tokenizer.convert_tokens_to_ids(CHAT_END)
    if isinstance(chat_end, int) and chat_end != tokenizer.unk_token_id:
        ids.append(chat_end)
    return [i for i in dict.fromkeys(ids) if i is not None]


def generate(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    progress: bool = True,
) -> list[str]:
    """The model's raw reply to each example, in input order (apply ``parse_answer`` to them).

    ``max_new_tokens=None`` uses :data:`DEFAULT_MAX_NEW_TOKENS` of each example's task.
    """
    return generate_with_stats(
        model, tokenizer, examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, progress=progress,
    ).texts  # fmt: skip


def generate_with_stats(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    progress: bool = True,
) -> GenerationResult:
    """Like :func:`generate`, also counting new tokens (up to each reply's stop token)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    prompts = [chat_prompt(tokenizer, example) for example in examples]
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    texts: list[str] = [""] * len(examples)
    new_tokens = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with tqdm(total=len(examples), desc="generate", disable=not progress, unit="ex") as bar:
            for rows in _batches(examples, lengths, batch_size):
                limit = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[examples[rows[0]].task]
                sampling = {"temperature": temperature, "top_p": top_p}
                replies, count = _generate_batch(
                    model, tokenizer, [prompts[i] for i in rows], limit, sampling
                )
                for row, reply in zip(rows, replies, strict=True):
                    texts[row] = reply
                new_tokens += count
                bar.update(len(rows))
    finally:
        model.train(was_training)
    return GenerationResult(texts, new_tokens, time.perf_counter() - start)


def _batches(
    examples: Sequence[Example], lengths: Sequence[int], batch_size: int
) -> Iterator[list[int]]:
    """Row indices, batched within one task (one token budget), longest prompts first.

    Longest first makes the first batch the most memory-hungry, so an out-of-memory error
    shows up at once rather than at the end.
    """
    order = sorted(range(len(examples)), key=lambda i: (examples[i].task, -lengths[i], i))
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) == batch_size or examples[batch[0]].task != examples[index].task):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


@torch.inference_mode()
def _generate_batch(
    model, tokenizer, prompts: list[str], max_new_tokens: int, sampling: dict[str, float]
) -> tuple[list[str], int]:
    """Generate for one left-padded batch; return the decoded replies and new-token count."""
    # padding_side as a call argument leaves the tokenizer (shared with training) untouched.
    inputs = tokenizer(
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    ).to(_input_device(model))
    stops = stop_token_ids(tokenizer)
    options: dict = {"do_sample": False}
    if sampling["temperature"] > 0:
        options = {"do_sample": True, **sampling}
    output = model.generate(
        **inputs, max_new_tokens=max_new_tokens, use_cache=True, eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id, **options,
    )  # fmt: skip
    generated = output[:, inputs["input_ids"].shape[1] :]  # [batch, new tokens]
    replies, count = [], 0
    for row in generated.tolist():
        ends = [position for position, token in enumerate(row) if token in stops]
        kept = row[: ends[0]] if ends else row
        count += len(kept) + (1 if ends else 0)  # the stop token was generated too
        replies.append(tokenizer.decode(kept, skip_special_tokens=True))
    return replies, count


def _input_device(model) -> torch.device:
    return next(model.parameters()).device

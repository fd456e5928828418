"""Batched generation of model replies for code-task examples, for evaluation.

Prompts are the chat-template prompts of :mod:`codetasks.prompts` (the format the adapters are
trained on). Generation is batched with LEFT padding, so every row's last prompt token sits at
the same position and new tokens are appended right after it, and decodes with the KV cache
(``use_cache=True``; the training code turns the cache off). Decoding is greedy by default, as
for pass@1 in HumanEval (Chen et al. 2021, arXiv 2107.03374) and in the multi-task code study
(arXiv 2601.15094); a temperature > 0 samples instead (FlowerTune's code challenge uses
temperature 0.2, top-p 0.95). Examples are sorted by prompt length so a batch holds prompts of
similar length (less padding), and the replies are returned in the input order. A row leaves
its batch as soon as it is finished, at a stop token or once its answer can no longer change
(a closed code block, a finished first line; :func:`codetasks.prompts.answer_is_final`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from codetasks.examples import Example
from codetasks.prompts import answer_is_final, to_messages
from colora import precision
from colora.base_model import dense_4bit_weights, head_in_compute_dtype

# Reply budgets, in SmolLM2 tokens, from the reference replies: MBPP functions p95 125, max 221
# (a model that restates a HumanEval docstring needs more); CodeXGLUE valid C# p95 211, max 347;
# summaries p95 20, of which only the first sentence is kept.
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {
    "generation": 384,
    "translation": 256,
    "summarization": 48,
}
CHAT_END = "<|im_end|>"  # ChatML end of turn (SmolLM2, Qwen2.5); the EOS of SmolLM2

log = logging.getLogger(__name__)


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
    context = context_length(model)
    # A prompt that fills the model's context leaves no room for a reply: it gets the empty
    # reply (scored as a wrong answer) instead of an attention over more positions than the
    # model was trained on, whose memory grows with the square of a hostile record's length.
    fits = [i for i, length in enumerate(lengths) if length < context]
    if len(fits) < len(examples):
        skipped = [examples[i].uid for i in range(len(examples)) if lengths[i] >= context]
        log.warning("%d prompt(s) of %d tokens or more (the model's context) get an empty "
                    "reply: %r", len(skipped), context, skipped[:5])  # fmt: skip
    new_tokens = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with (
            dense_4bit_weights(model),
            head_in_compute_dtype(model),
            tqdm(total=len(examples), desc="generate", disable=not progress, unit="ex") as bar,
        ):
            bar.update(len(examples) - len(fits))
            for batch in _batches([examples[i] for i in fits], [lengths[i] for i in fits],
                                  batch_size):  # fmt: skip
                rows = [fits[k] for k in batch]
                limit = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[examples[rows[0]].task]
                # The longest prompt reaches the end of the context first; the batch stops there.
                limit = min(limit, context - max(lengths[i] for i in rows))
                sampling = {"temperature": temperature, "top_p": top_p}
                replies, count = _generate_batch(
                    model, tokenizer, [prompts[i] for i in rows], examples[rows[0]].task, limit,
                    sampling,
                )  # fmt: skip
                for row, reply in zip(rows, replies, strict=True):
                    texts[row] = reply
                new_tokens += count
                bar.update(len(rows))
    finally:
        model.train(was_training)
    return GenerationResult(texts, new_tokens, time.perf_counter() - start)


def context_length(model) -> int:
    """Positions the model attends over (``max_position_embeddings``; unbounded if unset)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else 2**62


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
    model, tokenizer, prompts: list[str], task: str, max_new_tokens: int, sampling: dict
) -> tuple[list[str], int]:
    """Generate for one left-padded batch; return the decoded replies and new-token count."""
    # padding_side as a call argument leaves the tokenizer (shared with training) untouched.
    inputs = tokenizer(
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    ).to(_input_device(model))
    stops = set(stop_token_ids(tokenizer))

    def finished(tokens: list[int]) -> bool:
        return tokens[-1] in stops or answer_is_final(
            task, tokenizer.decode(tokens, skip_special_tokens=True)
        )

    rows = decode(model, inputs["input_ids"], inputs["attention_mask"], max_new_tokens,
                  _picker(sampling), finished)  # fmt: skip
    replies = [tokenizer.decode([t for t in row if t not in stops], skip_special_tokens=True)
               for row in rows]  # fmt: skip
    return replies, sum(len(row) for row in rows)


def _picker(sampling: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Next token per row from fp32 logits [b, V]: argmax, or a temperature / top-p draw."""
    if sampling["temperature"] <= 0:
        return lambda logits: logits.argmax(dim=-1)
    warpers = [TemperatureLogitsWarper(sampling["temperature"])]
    if sampling["top_p"] < 1:
        warpers.append(TopPLogitsWarper(sampling["top_p"]))

    def draw(logits: torch.Tensor) -> torch.Tensor:
        for warp in warpers:
            logits = warp(None, logits)
        return torch.multinomial(logits.softmax(dim=-1), 1).squeeze(1)

    return draw


def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    finished: Callable[[list[int]], bool],
) -> list[list[int]]:
    """Decode a left-padded batch with the KV cache; each row's new tokens, in row order.

    A row leaves the batch once ``finished`` says so (a stop token, or an answer that can no
    longer change), and its entries leave the cache: the remaining rows no longer pay for it,
    so one rambling reply does not hold the whole batch at full width. Positions count real
    tokens only (left padding shifts none), as in transformers' ``generate``; only the last
    position's logits are computed.
    """
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [b, T]
    active = list(range(input_ids.shape[0]))  # the original row of each live row
    out: list[list[int]] = [[] for _ in active]
    ids, cache = input_ids, None
    for _ in range(max_new_tokens):
        with precision.autocast(model):
            step = model(input_ids=ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
        cache, tokens = step.past_key_values, pick(step.logits[:, -1].float()).tolist()
        keep = []
        for k, (row, token) in enumerate(zip(active, tokens, strict=True)):
            out[row].append(token)
            if not finished(out[row]):
                keep.append(k)
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=input_ids.device)
            cache.batch_select_indices(index)
            attention_mask, positions = attention_mask[index], positions[index]
            active = [active[k] for k in keep]
        ids = torch.tensor([[tokens[k]] for k in keep], device=input_ids.device)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(keep), 1))], 1)
        positions = positions[:, -1:] + 1
    return out


def _input_device(model) -> torch.device:
    return next(model.parameters()).device

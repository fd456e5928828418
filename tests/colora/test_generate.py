"""Batched generation on the tiny random Llama: left padding, order, token budgets, state."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from codetasks.examples import TASK_NAMES, Example
from codetasks.loading import load_task
from colora import precision
from colora.generate import (
    DEFAULT_MAX_NEW_TOKENS,
    _batches,
    chat_prompt,
    context_length,
    decode,
    generate,
    generate_with_stats,
    stop_token_ids,
)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_settings):
    from colora.base_model import load_base_model

    return load_base_model(tiny_model_settings)


@pytest.fixture(scope="module")
def varied_model(tiny_model):
    """The tiny model with larger random weights: its greedy replies depend on the prompt.

    (The seed-0 tiny model answers every prompt with newlines, which would hide a padding bug.)
    """
    model = copy.deepcopy(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def mbpp(data_root) -> list[Example]:
    return load_task("generation", "valid", data_root=data_root, limit=5)


def _prompt_length(tokenizer, example: Example) -> int:
    return len(tokenizer(chat_prompt(tokenizer, example), add_special_tokens=False).input_ids)


def test_left_padding_gives_the_unbatched_greedy_reply(varied_model, tiny_tokenizer, mbpp):
    lengths = [_prompt_length(tiny_tokenizer, example) for example in mbpp]
    assert len(set(lengths)) > 1  # the batch really needs padding
    batched = generate(varied_model, tiny_tokenizer, mbpp, batch_size=5, max_new_tokens=6,
                       progress=False)  # fmt: skip
    for example, reply in zip(mbpp, batched, strict=True):
        alone = generate(varied_model, tiny_tokenizer, [example], max_new_tokens=6, progress=False)
        assert reply == alone[0], example.uid
    assert len(set(batched)) > 1  # replies differ per prompt, so order is checked too


def test_order_is_the_input_order(varied_model, tiny_tokenizer, mbpp):
    three = mbpp[:3]
    forward = generate(varied_model, tiny_tokenizer, three, batch_size=2, max_new_tokens=3,
                       progress=False)  # fmt: skip
    backward = generate(varied_model, tiny_tokenizer, three[::-1], batch_size=2, max_new_tokens=3,
                        progress=False)  # fmt: skip
    assert backward == forward[::-1]


def test_generation_leaves_model_and_tokenizer_as_they_were(tiny_model, tiny_tokenizer, mbpp):
    tiny_model.train()
    side = tiny_tokenizer.padding_side
    result = generate_with_stats(tiny_model, tiny_tokenizer, mbpp[:2], max_new_tokens=3,
                                 progress=False)  # fmt: skip
    assert tiny_model.training and tiny_tokenizer.padding_side == side
    assert tiny_model.config.use_cache is False  # the training setting is untouched
    assert 0 < result.new_tokens <= 2 * 3 and result.seconds > 0
    tiny_model.eval()


def test_sampling_is_reproducible_with_a_seed(varied_model, tiny_tokenizer, mbpp):
    replies = []
    for _ in range(2):
        torch.manual_seed(3)
        replies.append(generate(varied_model, tiny_tokenizer, mbpp[:2], max_new_tokens=5,
                                temperature=1.0, top_p=0.9, progress=False))  # fmt: skip
    assert replies[0] == replies[1]


def test_batches_stay_within_one_task_longest_prompt_first():
    examples = [Example(task=task, uid=f"{task}/{i}", source="s", target="t")
                for i, task in enumerate(["summarization", "generation"] * 3)]  # fmt: skip
    lengths = [5, 9, 7, 3, 6, 8]
    batches = list(_batches(examples, lengths, batch_size=2))
    assert batches == [[1, 5], [3], [2, 4], [0]]
    assert sorted(i for batch in batches for i in batch) == list(range(6))


def test_stop_tokens_and_per_task_budgets(tiny_tokenizer):
    assert tiny_tokenizer.eos_token == "<|im_end|>"
    assert stop_token_ids(tiny_tokenizer) == [tiny_tokenizer.eos_token_id]
    assert set(DEFAULT_MAX_NEW_TOKENS) == set(TASK_NAMES)


def test_bad_settings_are_refused(tiny_model, tiny_tokenizer, mbpp):
    with pytest.raises(ValueError, match="batch_size"):
        generate(tiny_model, tiny_tokenizer, mbpp, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny_model, tiny_tokenizer, mbpp, top_p=0.0, progress=False)


def test_a_fresh_colora_model_generates_like_its_base(varied_model, tiny_tokenizer, mbpp):
    """The client evaluates its PEFT model with Sigma_k hooks; B = 0 leaves the base output."""
    from colora.adapter import attach_adapters
    from runconfig.schema import AdapterSettings

    settings = AdapterSettings(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"))
    colora = attach_adapters(copy.deepcopy(varied_model), settings, seed=0)
    expected = generate(varied_model, tiny_tokenizer, mbpp[:2], max_new_tokens=3, progress=False)
    assert generate(colora, tiny_tokenizer, mbpp[:2], max_new_tokens=3, progress=False) == expected


def _left_padded(tokenizer, examples):
    prompts = [chat_prompt(tokenizer, example) for example in examples]
    return tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                     add_special_tokens=False)  # fmt: skip


def test_decode_matches_transformers_generate(varied_model, tiny_tokenizer, mbpp):
    inputs = _left_padded(tiny_tokenizer, mbpp[:3])
    rows = decode(varied_model, inputs.input_ids, inputs.attention_mask, 5,
                  lambda logits: logits.argmax(-1), lambda tokens: False)  # fmt: skip
    with torch.inference_mode(), precision.autocast(varied_model):
        expected = varied_model.generate(**inputs, max_new_tokens=5, do_sample=False,
                                         use_cache=True, eos_token_id=None,
                                         pad_token_id=tiny_tokenizer.pad_token_id)  # fmt: skip
    assert rows == expected[:, inputs.input_ids.shape[1] :].tolist()


def test_a_finished_row_leaves_the_batch_without_changing_the_others(
    varied_model, tiny_tokenizer, mbpp
):
    inputs = _left_padded(tiny_tokenizer, mbpp[:3])
    greedy = lambda logits: logits.argmax(-1)  # noqa: E731
    full = decode(varied_model, inputs.input_ids, inputs.attention_mask, 6, greedy,
                  lambda tokens: False)  # fmt: skip
    assert full[1][:2] not in (full[0][:2], full[2][:2])  # only the middle row stops early
    widths = []

    def finished(tokens):
        widths.append(tokens)
        return tokens == full[1][:2]

    early = decode(varied_model, inputs.input_ids, inputs.attention_mask, 6, greedy, finished)
    assert early == [full[0], full[1][:2], full[2]]
    assert len(widths) == 3 + 3 + 4 * 2  # 3 rows for two steps, then 2 rows for four


def test_replies_stop_once_the_answer_is_final(varied_model, tiny_tokenizer, mbpp, monkeypatch):
    import colora.generate as generate_module

    monkeypatch.setattr(generate_module, "answer_is_final", lambda task, text: True)
    result = generate_with_stats(varied_model, tiny_tokenizer, mbpp[:3], batch_size=3,
                                 max_new_tokens=8, progress=False)  # fmt: skip
    assert result.new_tokens == 3  # one token each, then the answer was final


def _with_source_of_length(tokenizer, example: Example, tokens: int) -> Example:
    """``example`` with its source padded by words until its prompt is ``tokens`` long."""
    low, high = 0, tokens
    while low < high:  # the fewest words whose prompt reaches ``tokens``
        words = (low + high) // 2
        grown = dataclasses.replace(example, source=example.source + " x" * words)
        if _prompt_length(tokenizer, grown) < tokens:
            low = words + 1
        else:
            high = words
    grown = dataclasses.replace(
        example, uid=f"{example.uid}/long", source=example.source + " x" * low
    )
    assert _prompt_length(tokenizer, grown) == tokens  # " x" is one token after a space
    return grown


def test_prompts_beyond_the_context_get_empty_replies(varied_model, tiny_tokenizer, mbpp, caplog):
    """A hostile record that fills the context is answered "" and never reaches the model;
    the other replies are those generated without it."""
    context = context_length(varied_model)
    assert context == 1024  # the tiny model's max_position_embeddings
    hostile = [_with_source_of_length(tiny_tokenizer, mbpp[0], context),
               dataclasses.replace(mbpp[1], uid="huge", source="x " * 200_000)]  # fmt: skip
    alone = generate_with_stats(varied_model, tiny_tokenizer, mbpp[2:], max_new_tokens=4,
                                progress=False)  # fmt: skip
    with caplog.at_level("WARNING", logger="colora.generate"):
        mixed = generate_with_stats(varied_model, tiny_tokenizer,
                                    [hostile[0], *mbpp[2:], hostile[1]], batch_size=2,
                                    max_new_tokens=4, progress=False)  # fmt: skip
    assert mixed.texts == ["", *alone.texts, ""]
    assert mixed.new_tokens == alone.new_tokens
    assert "2 prompt(s) of 1024 tokens or more" in caplog.text and "huge" in caplog.text


def test_replies_stop_at_the_end_of_the_context(varied_model, tiny_tokenizer, mbpp):
    context = context_length(varied_model)
    near_end = _with_source_of_length(tiny_tokenizer, mbpp[0], context - 2)
    result = generate_with_stats(varied_model, tiny_tokenizer, [near_end], max_new_tokens=6,
                                 progress=False)  # fmt: skip
    assert result.new_tokens == 2

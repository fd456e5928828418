"""The response-only LM head gives the loss of the full logits, in fp32 and in bf16 compute."""

from __future__ import annotations

import math

import pytest
import torch

from client.batching import IGNORE, collate, encode_all
from client.train import (
    Phase,
    _backward_in_pieces,
    per_example_loss,
    resolve_micro_batch_size,
    split_batch,
    train,
)
from codetasks.loading import load_task
from colora import precision
from colora.adapter import attach_adapters, personal_parameters, shared_parameters
from colora.base_model import load_base_model
from runconfig.schema import AdapterSettings, ModelSettings

SETTINGS = AdapterSettings(dropout=0.0)


def _model(quantization: str = "none", compute_dtype: str = "fp32"):
    base = load_base_model(
        ModelSettings(source="tiny", quantization=quantization), compute_dtype=compute_dtype
    )
    model = attach_adapters(base, SETTINGS, seed=0)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B = 0 would hide the adapter path
            torch.nn.init.normal_(param, std=0.05)
    return model


@pytest.fixture(scope="module")
def batch(tiny_tokenizer, data_root):
    examples = load_task("generation", "train", data_root=data_root, limit=8)
    items = encode_all(tiny_tokenizer, examples, 512)[:3]
    return collate(items, tiny_tokenizer.pad_token_id)  # rows of different lengths: padding


def _full_logits_loss(model, batch) -> torch.Tensor:
    """The previous implementation: the LM head over every position, then masked."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    labels = batch.labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(labels.shape)
    return token_loss.sum(dim=1) / (labels != IGNORE).sum(dim=1)


def _loss_and_grads(loss_fn, model, batch):
    model.zero_grad(set_to_none=True)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name or "personal_sigma" in name)
    losses = loss_fn(model, batch)
    losses.mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses.detach(), grads


def test_batch_has_padding_and_prompt_positions(batch):
    assert (batch.attention_mask == 0).any() and (batch.labels == IGNORE).any()


def test_response_only_head_matches_full_logits_loss_and_gradients(batch):
    model = _model()
    model.train()
    losses, grads = _loss_and_grads(per_example_loss, model, batch)
    expected, expected_grads = _loss_and_grads(_full_logits_loss, model, batch)
    assert losses.shape == (3,) and (losses > 0).all()
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-6)


def test_a_row_without_labels_has_zero_loss(batch):
    labels = batch.labels.clone()
    labels[1] = IGNORE
    empty = type(batch)(batch.input_ids, batch.attention_mask, labels, batch.tasks)
    model = _model()
    with torch.no_grad():
        losses = per_example_loss(model, empty)
        full = per_example_loss(model, batch)
    assert losses[1] == 0
    torch.testing.assert_close(losses[[0, 2]], full[[0, 2]])


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_bf16_compute_is_close_to_fp32(batch, quantization):
    fp32, bf16 = _model(quantization, "fp32"), _model(quantization, "bf16")
    assert precision.of(fp32) == torch.float32 and precision.of(bf16) == torch.bfloat16
    with torch.no_grad():
        reference, mixed = per_example_loss(fp32, batch), per_example_loss(bf16, batch)
    assert mixed.dtype == torch.float32  # the loss itself stays fp32
    torch.testing.assert_close(mixed, reference, rtol=2e-2, atol=0)


def test_split_batch_cuts_each_piece_to_its_longest_row(batch):
    pieces = split_batch(batch, 2)
    assert [len(p.tasks) for p in pieces] == [2, 1]
    assert split_batch(batch, 0) == [batch] and split_batch(batch, 3) == [batch]
    lengths = batch.attention_mask.sum(dim=1)
    for piece, rows in zip(pieces, ([0, 1], [2]), strict=True):
        width = int(lengths[rows].max())
        assert piece.input_ids.shape == (len(rows), width)
        assert torch.equal(piece.input_ids, batch.input_ids[rows, :width])
        assert torch.equal(piece.labels, batch.labels[rows, :width])
        assert piece.tasks == tuple(batch.tasks[r] for r in rows)
    assert pieces[1].input_ids.shape[1] < batch.input_ids.shape[1]  # padding dropped


def _grads_after_backward(model, batch, size: int, grad_accum: int):
    model.zero_grad(set_to_none=True)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name or "personal_sigma" in name)
    losses = _backward_in_pieces(model, batch, size, grad_accum)
    return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("size", [1, 2])
def test_micro_batches_give_the_whole_batch_gradient(batch, size):
    model = _model()
    model.train()
    whole_losses, whole = _grads_after_backward(model, batch, 0, grad_accum=2)
    losses, grads = _grads_after_backward(model, batch, size, grad_accum=2)
    torch.testing.assert_close(losses, whole_losses, rtol=1e-5, atol=1e-6)
    assert grads.keys() == whole.keys() and len(grads) > 0
    for name in grads:  # the same sum in another order: equal to float rounding
        torch.testing.assert_close(grads[name], whole[name], rtol=1e-4, atol=1e-7)
    # and it is the mean loss over grad_accum = 2 batches: half the gradient of the mean
    _, expected_grads = _loss_and_grads(per_example_loss, model, batch)
    for name in grads:
        torch.testing.assert_close(2 * grads[name], expected_grads[name], rtol=1e-4, atol=1e-7)


def test_micro_batch_size_auto_is_two_on_the_cpu_and_whole_on_cuda():
    assert resolve_micro_batch_size(0, torch.device("cpu")) == 2
    assert resolve_micro_batch_size(0, torch.device("cuda")) == 0
    assert resolve_micro_batch_size(3, torch.device("cpu")) == 3
    assert resolve_micro_batch_size(3, torch.device("cuda")) == 3


def test_a_proximal_term_on_frozen_shared_factors_does_not_break_the_sigma_phase(batch):
    """FedProx's term is on A and B; in CoLoRA's Sigma_k phase they are frozen, so the term
    has no gradient there and only its value counts (a round under local DP hit this)."""
    model = _model()
    shared = shared_parameters(model)
    anchors = [p.detach().clone() + 0.01 for p in shared]
    phases = [
        Phase("sigma", personal_parameters(model), 1, 1e-3),
        Phase("shared", shared, 1, 3e-4),
    ]
    result = train(model, iter(lambda: batch, None), phases, micro_batch_size=2,
                   proximal=(0.5, shared, anchors))  # fmt: skip
    assert len(result.step_losses) == 2
    assert all(math.isfinite(loss) for loss in result.step_losses)

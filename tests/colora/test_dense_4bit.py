"""NF4 weights dequantised once give bitsandbytes' own results, and leave no trace after."""

from __future__ import annotations

import pytest
import torch

from colora.adapter import attach_adapters
from colora.base_model import dense_4bit_weights, head_in_compute_dtype, load_base_model
from runconfig.schema import AdapterSettings, ModelSettings

NF4_TINY = ModelSettings(source="tiny", quantization="nf4")


def _model(compute_dtype: str):
    model = attach_adapters(
        load_base_model(NF4_TINY, compute_dtype=compute_dtype), AdapterSettings(dropout=0.0), 0
    )
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
            param.requires_grad_(True)
    return model


def _logits_and_grads(model):
    from colora import precision

    model.zero_grad(set_to_none=True)
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(3))
    with precision.autocast(model):
        logits = model(input_ids=ids).logits.float()
    logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_fp32_results_are_bit_identical():
    model = _model("fp32")
    logits, grads = _logits_and_grads(model)
    with dense_4bit_weights(model):
        dense_logits, dense_grads = _logits_and_grads(model)
    torch.testing.assert_close(dense_logits, logits, rtol=0, atol=0)
    assert dense_grads.keys() == grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(dense_grads[name], grads[name], rtol=0, atol=0, msg=name)


def test_bf16_results_are_bit_identical():
    model = _model("bf16")
    logits, grads = _logits_and_grads(model)
    with dense_4bit_weights(model):
        dense_logits, dense_grads = _logits_and_grads(model)
    torch.testing.assert_close(dense_logits, logits, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(dense_grads[name], grads[name], rtol=0, atol=0, msg=name)


def test_the_layers_get_their_own_forward_back():
    import bitsandbytes as bnb

    model = _model("fp32")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers
    with dense_4bit_weights(model):
        assert all("forward" in vars(layer) for layer in layers)
    assert not any("forward" in vars(layer) for layer in layers)
    with dense_4bit_weights(model):
        with dense_4bit_weights(model):  # nested: the outer context keeps its dense layers
            pass
        assert all("forward" in vars(layer) for layer in layers)
    assert not any("forward" in vars(layer) for layer in layers)
    with pytest.raises(RuntimeError), dense_4bit_weights(model):
        raise RuntimeError("an error inside still restores the layers")
    assert not any("forward" in vars(layer) for layer in layers)


def _inference_logits(model) -> torch.Tensor:
    from colora import precision

    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode(), precision.autocast(model):
        return model(input_ids=ids).logits.float()


def test_head_cast_once_gives_autocasts_logits_bit_for_bit():
    model = _model("bf16")
    head = model.get_output_embeddings()
    assert head.weight.dtype == torch.float32  # kept fp32, so autocast casts it every forward
    logits = _inference_logits(model)
    with dense_4bit_weights(model), head_in_compute_dtype(model):
        assert "forward" in vars(head)
        cast_logits = _inference_logits(model)
    assert "forward" not in vars(head)
    with dense_4bit_weights(model):
        dense_logits = _inference_logits(model)
    torch.testing.assert_close(cast_logits, dense_logits, rtol=0, atol=0)
    torch.testing.assert_close(cast_logits, logits, rtol=0, atol=0)


def test_head_of_an_fp32_model_is_left_alone():
    model = _model("fp32")
    with head_in_compute_dtype(model):
        assert "forward" not in vars(model.get_output_embeddings())


def _inference_model():
    import bitsandbytes as bnb

    model = load_base_model(NF4_TINY, compute_dtype="bf16", inference_only=True).eval()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not all(getattr(layer, "support_avx512bf16_for_cpu", False) for layer in layers):
        pytest.skip("bitsandbytes' packed kernel needs a CPU with AVX512-BF16")
    return model, layers


def _packed(layer) -> bool:
    return getattr(layer.weight.quant_state, "packing_format_for_cpu", False)


def test_a_single_row_takes_bitsandbytes_packed_kernel_and_leaves_the_weights_alone():
    from colora import precision

    model, layers = _inference_model()
    ids = torch.tensor([[5]])
    with torch.inference_mode(), precision.autocast(model):
        with dense_4bit_weights(model):
            ours = model(input_ids=ids).logits.float()
        # The layers kept their own layout: the packed weights were copies.
        assert not any(_packed(layer) for layer in layers)
        # bitsandbytes' own inference forward packs the layers in place, then multiplies.
        theirs = model(input_ids=ids).logits.float()
    assert all(_packed(layer) for layer in layers)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_several_rows_stay_on_the_dense_weights():
    from colora import precision

    model, _ = _inference_model()
    ids = torch.tensor([[5], [6]])
    with torch.inference_mode(), precision.autocast(model):
        with dense_4bit_weights(model):
            dense = model(input_ids=ids).logits.float()
        model.apply(lambda m: setattr(m, "support_avx512bf16_for_cpu", False))
        plain = model(input_ids=ids).logits.float()  # bitsandbytes' dequantise-and-multiply
    torch.testing.assert_close(dense, plain, rtol=0, atol=0)

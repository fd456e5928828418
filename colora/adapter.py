"""CoLoRA adapters on top of PEFT LoRA: a shared (A, B) and a private r x r Sigma_k per client.

CoLoRA (arXiv 2602.07218; personal parts in the spirit of FedRep, arXiv 2102.07078, and
FedDPA, arXiv 2409.17201) writes the update of a frozen weight W0 as

    dW_k = s * B @ Sigma_k @ A        A: r x d_in, B: d_out x r (shared), Sigma_k: r x r (private)

The shared factors are an ordinary PEFT LoRA adapter named ``"shared"``, so they are selected
by adapter name with ``get_peft_model_state_dict``. Sigma_k is a parameter attached to each
LoRA layer and applied by a forward pre-hook on ``lora_B``: PEFT computes
``lora_B(lora_A(x)) * s``, and the hook turns ``lora_A(x)`` (shape [..., r]) into
``lora_A(x) @ Sigma_k^T``. Sigma_k starts at the identity, so with B = 0 the model starts as
the base model, exactly as plain LoRA does.

The exact aggregations (FLoRA, arXiv 2409.05976; FedEx-LoRA, arXiv 2410.09432) fold a merged
update into the weight the next round trains on. The base may be 4-bit, so the merged term is
kept apart as a frozen dense D per layer, added by a forward hook: ``y += s * x @ D^T``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from colora.keys import lora_key
from runconfig.fields import require
from runconfig.schema import AdapterSettings

SHARED = "shared"
FACTORS = ("A", "B")


class PersonalSigma(nn.Module):
    """The private r x r mixing matrix of one LoRA layer; never leaves its client."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(rank))

    def mix(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        hidden = args[0]  # [..., r], the output of lora_A
        return (hidden @ self.weight.to(hidden.dtype).T,)


class FrozenDelta(nn.Module):
    """A frozen merged update D (d_out x d_in) of one LoRA layer; adds s * x @ D^T when set."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("delta", None, persistent=False)

    def add(self, _module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
        if self.delta is None:
            return output
        merged = F.linear(args[0].to(self.delta.dtype), self.delta) * self.scale
        return output + merged.to(output.dtype)


def lora_config(settings: AdapterSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_adapters(base_model: nn.Module, settings: AdapterSettings, seed: int) -> PeftModel:
    """Wrap ``base_model`` with the shared LoRA adapter and, if configured, Sigma_k.

    The seed fixes A's random init, so the server and every client build identical A.
    Sigma_k modules live in ``model.personal_sigma``, outside the LoRA layers: PEFT selects
    every parameter under a tuner layer as part of the adapter, and Sigma_k must not travel.
    The frozen merged terms live in ``model.frozen_delta`` for the same reason; they are empty
    until :func:`load_frozen_delta` sets them. A copy of the initial shared state is kept: it
    is what factors that are neither sent nor private start from (FFA-LoRA's frozen A).
    """
    check_rank(base_model, settings)
    torch.manual_seed(seed)
    model = get_peft_model(base_model, lora_config(settings), adapter_name=SHARED)
    model.initial_shared = {k: v.clone() for k, v in shared_state(model).items()}
    model.frozen_delta = nn.ModuleDict()
    for name, layer in _lora_layers(model):
        frozen = FrozenDelta(settings.scale)
        model.frozen_delta[_sigma_key(name)] = frozen
        layer.register_forward_hook(frozen.add)
    if settings.personal == "sigma":
        model.personal_sigma = nn.ModuleDict()
        for name, layer in _lora_layers(model):
            sigma = PersonalSigma(settings.rank).to(layer.lora_A[SHARED].weight.device)
            model.personal_sigma[_sigma_key(name)] = sigma
            layer.lora_B[SHARED].register_forward_pre_hook(sigma.mix)
    return model


def check_rank(base_model: nn.Module, settings: AdapterSettings) -> None:
    """Refuse a rank above min(d_in, d_out) of a target layer: B A then has rank at most
    that, so the extra ranks only add parameters (and memory: rank 10^9 would not fit)."""
    for name, module in base_model.named_modules():
        dims = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if name.rsplit(".", 1)[-1] in settings.target_modules and None not in dims:
            require(
                settings.rank <= min(dims),
                "adapter",
                "rank",
                settings.rank,
                f"exceeds min(d_in, d_out) = {min(dims)} of target layer {name}",
            )


def _sigma_key(layer_name: str) -> str:
    return layer_name.replace(".", "__")  # ModuleDict keys cannot contain dots


def _lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and SHARED in module.lora_A:
            yield name, module


def _sigma_modules(model: nn.Module) -> dict[str, PersonalSigma]:
    return dict(getattr(model, "personal_sigma", {}).items())


def shared_parameters(model: PeftModel, factors: tuple[str, ...] = FACTORS) -> list[nn.Parameter]:
    """The shared LoRA factors, ``"A"`` and/or ``"B"`` (FFA-LoRA trains B only)."""
    modules = [
        getattr(layer, f"lora_{factor}")
        for _, layer in _lora_layers(model)
        for factor in FACTORS
        if factor in factors
    ]
    return [module[SHARED].weight for module in modules]


def personal_parameters(model: PeftModel) -> list[nn.Parameter]:
    return [sigma.weight for sigma in _sigma_modules(model).values()]


def shared_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The tensors that travel: PEFT's own selection of the ``"shared"`` adapter."""
    state = get_peft_model_state_dict(model, adapter_name=SHARED)
    return {key: value.detach().float().cpu() for key, value in state.items()}


def load_shared_state(model: PeftModel, state: Mapping[str, torch.Tensor]) -> None:
    """Load shared factors; a missing or unexpected key or a wrong shape raises ValueError."""
    expected = get_peft_model_state_dict(model, adapter_name=SHARED)
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))[:3]
        extra = sorted(set(state) - set(expected))[:3]
        raise ValueError(f"shared state mismatch: missing {missing}, unexpected {extra}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"shared state {key}: shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    set_peft_model_state_dict(model, dict(state), adapter_name=SHARED)


def personal_state(model: PeftModel) -> dict[str, torch.Tensor]:
    return {
        name: mod.weight.detach().float().cpu().clone()
        for name, mod in _sigma_modules(model).items()
    }


def load_personal_state(model: PeftModel, state: Mapping[str, torch.Tensor] | None) -> None:
    """Load Sigma_k, or reset every Sigma_k to the identity when ``state`` is None."""
    modules = _sigma_modules(model)
    if state is not None and set(state) != set(modules):
        raise ValueError(
            f"personal state does not match the model: {len(state)} tensors "
            f"for {len(modules)} layers"
        )
    with torch.no_grad():
        for name, mod in modules.items():
            value = torch.eye(mod.weight.shape[0]) if state is None else state[name]
            mod.weight.copy_(value.to(mod.weight.device))


def folded_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """Shared state with Sigma_k folded into B (B' = B @ Sigma_k): a plain LoRA adapter."""
    state = shared_state(model)
    sigmas = _sigma_modules(model)
    for name, _ in _lora_layers(model):
        sigma = sigmas.get(_sigma_key(name))
        if sigma is not None:
            key = lora_key(name, "B")  # PEFT's saved key: the adapter name is stripped
            state[key] = state[key] @ sigma.weight.detach().float().cpu()
    return state


def initial_shared_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The shared state right after :func:`attach_adapters` (A from the seed, B = 0)."""
    return {key: value.clone() for key, value in model.initial_shared.items()}


def load_frozen_delta(model: PeftModel, state: Mapping[str, torch.Tensor] | None) -> None:
    """Set the frozen merged term D of each LoRA layer, keyed by layer name; None clears all.

    A layer missing from ``state`` gets no term; a name that is not a LoRA layer raises.
    """
    state = dict(state or {})
    layers = dict(_lora_layers(model))
    unknown = sorted(set(state) - set(layers))
    if unknown:
        raise ValueError(f"frozen terms for unknown LoRA layers: {unknown[:3]}")
    for name, layer in layers.items():
        value = state.get(name)
        device = layer.lora_A[SHARED].weight.device
        model.frozen_delta[_sigma_key(name)].delta = (
            None if value is None else value.float().to(device)
        )

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

import dataclasses
import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from colora.dropout import replace_lora_dropout
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


class PersonalLoRA(nn.Module):
    """The private LoRA (C_k: r_p x d_in, D_k: d_out x r_p) of one layer, FedDPA's local
    adapter (Yang et al. 2024, arXiv 2409.17201); adds s_p * D_k C_k x to the layer's output,
    beside the shared s * B A x. Never leaves its client.

    C starts as PEFT initialises lora_A (Kaiming-uniform) and D at zero, so the personal path
    starts at zero; the start is kept to reset the module for a client without saved state.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.C = nn.Parameter(torch.empty(rank, d_in))
        nn.init.kaiming_uniform_(self.C, a=math.sqrt(5))
        self.D = nn.Parameter(torch.zeros(d_out, rank))
        self.initial = {"C": self.C.detach().clone(), "D": self.D.detach().clone()}

    def add(self, _module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
        hidden = F.linear(args[0].to(self.C.dtype), self.C)  # [..., r_p]
        return output + (F.linear(hidden, self.D) * self.scale).to(output.dtype)


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
    replace_lora_dropout(model, SHARED)  # same rule, a quarter of the random draws (issue 12)
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
    if settings.personal == "dual":
        _attach_personal_lora(model, settings)
    return model


def _attach_personal_lora(model: PeftModel, settings: AdapterSettings) -> None:
    """FedDPA's personal LoRA on every shared LoRA layer, in ``model.personal_lora`` (outside
    the tuner layers, so PEFT never selects it as part of the shared adapter)."""
    model.personal_lora = nn.ModuleDict()
    for name, layer in _lora_layers(model):
        weight = layer.lora_A[SHARED].weight  # r x d_in
        d_out = layer.lora_B[SHARED].weight.shape[0]
        personal = PersonalLoRA(
            weight.shape[1], d_out, settings.personal_rank, settings.personal_scale
        ).to(weight.device)
        model.personal_lora[_sigma_key(name)] = personal
        layer.register_forward_hook(personal.add)


def check_rank(base_model: nn.Module, settings: AdapterSettings) -> None:
    """Refuse a rank above min(d_in, d_out) of a target layer: B A then has rank at most
    that, so the extra ranks only add parameters (and memory: rank 10^9 would not fit)."""
    for name, module in base_model.named_modules():
        dims = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if name.rsplit(".", 1)[-1] in settings.target_modules and None not in dims:
            for key in ("rank", "personal_rank"):
                require(
                    getattr(settings, key) <= min(dims),
                    "adapter",
                    key,
                    getattr(settings, key),
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


def _personal_lora_modules(model: nn.Module) -> dict[str, PersonalLoRA]:
    return dict(getattr(model, "personal_lora", {}).items())


def personal_parameters(model: PeftModel) -> list[nn.Parameter]:
    """The private parameters: every Sigma_k, or every (C_k, D_k) of the dual personal LoRA."""
    sigmas = [sigma.weight for sigma in _sigma_modules(model).values()]
    return sigmas + [p for m in _personal_lora_modules(model).values() for p in (m.C, m.D)]


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


def _personal_tensors(model: PeftModel) -> dict[str, tuple[nn.Parameter, torch.Tensor]]:
    """Every private tensor by its saved key, with the value it starts from: Sigma_k (key: the
    layer) from the identity, the personal LoRA's ``<layer>.C`` and ``<layer>.D`` from their
    initialisation."""
    tensors = {
        name: (mod.weight, torch.eye(mod.weight.shape[0]))
        for name, mod in _sigma_modules(model).items()
    }
    for name, mod in _personal_lora_modules(model).items():
        tensors |= {f"{name}.{f}": (getattr(mod, f), mod.initial[f]) for f in ("C", "D")}
    return tensors


def personal_state(model: PeftModel) -> dict[str, torch.Tensor]:
    return {
        key: param.detach().float().cpu().clone()
        for key, (param, _) in _personal_tensors(model).items()
    }


def load_personal_state(model: PeftModel, state: Mapping[str, torch.Tensor] | None) -> None:
    """Load the private state, or reset it to its start (Sigma_k = I; C_k as initialised,
    D_k = 0) when ``state`` is None."""
    tensors = _personal_tensors(model)
    if state is not None and set(state) != set(tensors):
        raise ValueError(
            f"personal state does not match the model: {len(state)} tensors "
            f"for {len(tensors)} expected"
        )
    with torch.no_grad():
        for key, (param, start) in tensors.items():
            value = start if state is None else state[key]
            param.copy_(value.to(param.device))


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


def plain_lora_state(
    model: PeftModel, settings: AdapterSettings
) -> tuple[dict[str, torch.Tensor], AdapterSettings]:
    """The client's whole adapter as one plain PEFT LoRA: ``(state, settings to save it with)``.

    Sigma_k is folded into B (:func:`folded_state`). The dual personal LoRA is concatenated
    with the shared one into a LoRA of rank r + r_p with scale 1 (alpha = r + r_p), since
    s B A + s_p D C = [s B, s_p D] [A; C]; ``PeftModel.from_pretrained`` loads it as it is.
    """
    state = folded_state(model)
    lora = _personal_lora_modules(model)
    if not lora:
        return state, settings
    for name, _ in _lora_layers(model):
        personal = lora[_sigma_key(name)]
        key_a, key_b = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        c, d = personal.C.detach().float().cpu(), personal.D.detach().float().cpu()
        state[key_a] = torch.cat([state[key_a], c], dim=0)  # (r + r_p) x d_in
        state[key_b] = torch.cat([settings.scale * state[key_b], personal.scale * d], dim=1)
    width = settings.rank + settings.personal_rank
    merged = dataclasses.replace(
        settings, rank=width, alpha=width, personal="none", personal_rank=0
    )
    return state, merged


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

"""Per-process caches: the base model is loaded once per worker, data once per client.

Flower's simulation engine reuses worker processes across rounds and across the clients it
schedules on them, so rebuilding a 4-bit model for every message would dominate a round.
The cached model is stateless between messages: every handler loads the shared adapter
from the message and Sigma_k from the client's disk before using it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel

from client.batching import Encoded, encode_all
from client.data import ClientIdentity, client_examples, client_identity
from codetasks.examples import Example
from colora.adapter import attach_adapters
from colora.base_model import (
    checkpointing,
    device,
    load_base_model,
    load_tokenizer,
    resolve_model_path,
)
from runconfig.schema import RunConfig

log = logging.getLogger(__name__)


@dataclass
class ModelRuntime:
    model: PeftModel
    tokenizer: Any
    base_path: str


@dataclass
class ClientData:
    ident: ClientIdentity
    train: list[Encoded]
    valid: list[Encoded]
    train_counts: dict[str, int]
    # Raw validation examples per task, for generation metrics (``eval.limit`` of each).
    valid_examples: dict[str, list[Example]]


_MODELS: dict[tuple, ModelRuntime] = {}
_DATA: OrderedDict[tuple, ClientData] = OrderedDict()
_MAX_CLIENTS_CACHED = 256  # a worker may serve thousands of simulated clients


def model_runtime(cfg: RunConfig) -> ModelRuntime:
    t = cfg.train
    key = (cfg.model, cfg.adapter, cfg.run.seed, t.compute_dtype, t.gradient_checkpointing)
    if key not in _MODELS:
        _MODELS.clear()  # one model per process: a new config replaces the old one
        spec = cfg.model
        torch.manual_seed(cfg.run.seed)
        base = load_base_model(
            spec,
            compute_dtype=t.compute_dtype,
            gradient_checkpointing=checkpointing(t.gradient_checkpointing, device()),
        )
        model = attach_adapters(base, cfg.adapter, seed=cfg.run.seed)
        _MODELS[key] = ModelRuntime(model, load_tokenizer(spec), resolve_model_path(spec))
        log.info("Loaded base model %s (%s) in this worker", spec.source, spec.quantization)
    return _MODELS[key]


def client_data(cfg: RunConfig, node_config: dict, tokenizer) -> ClientData:
    ident = client_identity(node_config, cfg)
    key = (
        ident,
        cfg.data,
        cfg.train.max_train_examples,
        cfg.train.eval_examples,
        cfg.eval.limit,
        cfg.train.max_seq_length,
        cfg.run.seed,
    )
    if key in _DATA:
        _DATA.move_to_end(key)
    else:
        train, valid = client_examples(cfg, ident)
        max_len = cfg.train.max_seq_length
        _DATA[key] = ClientData(
            ident=ident,
            train=encode_all(tokenizer, [e for v in train.values() for e in v], max_len),
            valid=encode_all(
                tokenizer,
                [e for v in valid.values() for e in v[: cfg.train.eval_examples]],
                max_len,
            ),
            train_counts={task: len(v) for task, v in train.items()},
            valid_examples={task: v[: cfg.eval.limit] for task, v in valid.items()},
        )
        while len(_DATA) > _MAX_CLIENTS_CACHED:
            _DATA.popitem(last=False)
    return _DATA[key]

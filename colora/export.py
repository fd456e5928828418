"""Write adapters as standard PEFT directories that ``PeftModel.from_pretrained`` loads.

Exported client adapters carry Sigma_k folded into B (CoLoRA export, see
``colora.adapter.folded_state``), so users need neither fedcolora nor the client's private
state to load them. Directories are written to a temporary sibling and renamed into place,
so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from colora.adapter import lora_config
from runconfig.schema import AdapterSettings

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def save_adapter(
    state: Mapping[str, torch.Tensor],
    settings: AdapterSettings,
    base_model_path: str,
    out_dir: Path,
) -> Path:
    """Save ``state`` (PEFT keys, adapter name stripped) as a LoRA adapter in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        config = lora_config(settings)
        config.base_model_name_or_path = base_model_path
        config.save_pretrained(tmp)
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

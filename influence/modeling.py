"""Loading a Hugging Face sequence classifier or causal LM and its tokenizer, and naming the device.

Local folders and hub ids go through the same ``from_pretrained`` calls; safetensors
weights are preferred, remote code runs only when asked for. Failures become one-line
:class:`UserError` messages that say what to do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from job.errors import UserError
from job.options import TASK_CAUSAL_LM, TASK_CLASSIFICATION

DEVICE_HELP = "use auto, cpu, cuda or cuda:N"


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks the first GPU when there is one."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise UserError(f"unknown device {spec!r}: {DEVICE_HELP}") from None
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} is not available: no CUDA GPU is visible to torch")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {spec!r} is not available: torch sees {torch.cuda.device_count()} GPU(s)")
        return device
    raise UserError(f"unknown device {spec!r}: {DEVICE_HELP}")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _is_path_like(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[0] or Path(spec).suffix != ""


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: str
    task: str = TASK_CLASSIFICATION

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def label_names(self) -> list[str]:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(self.num_labels)]


def quiet_libraries() -> None:
    """No progress bars or advice from transformers/datasets on stderr: progress is ours to show."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


def model_task(source: str, *, trust_remote_code: bool) -> str:
    """``causal-lm`` when the saved model is one transformers loads as a causal LM (its config names a
    ``*ForCausalLM`` or ``*LMHeadModel`` architecture), ``classification`` otherwise."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    architectures = getattr(config, "architectures", None) or []
    causal = any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)
    return TASK_CAUSAL_LM if causal else TASK_CLASSIFICATION


def load_model(spec: str, *, task: Optional[str], trust_remote_code: bool, device: torch.device) -> LoadedModel:
    """AutoModelForSequenceClassification or AutoModelForCausalLM (``task``; None: as the model's config
    says) + AutoTokenizer, from a folder or a hub id."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    quiet_libraries()
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model folder {spec} has no config.json: not a save_pretrained folder")
        source = str(local)
    elif _is_path_like(spec):
        raise UserError(f"model folder {spec} does not exist")
    else:
        source = spec
    try:
        task = task or model_task(source, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        auto = AutoModelForCausalLM if task == TASK_CAUSAL_LM else AutoModelForSequenceClassification
        model = auto.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(_explain_load_failure("model", spec, source is spec, error)) from None
    model.to(device).eval()
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of {spec} has no padding token and no end-of-sequence token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, spec, task)


def _explain_load_failure(kind: str, spec: str, from_hub: bool, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if from_hub and hub_offline():
        return (
            f"{kind} {spec!r} is not a local folder and not in the Hugging Face cache, and the hub is offline "
            "(HF_HUB_OFFLINE=1): download it on a connected machine or pass a local folder"
        )
    if from_hub:
        return f"{kind} {spec!r} could not be loaded from the Hugging Face hub or cache: {first_line}"
    return f"{kind} {spec} could not be loaded: {first_line}"


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer, by name: a store is tied to these exact weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

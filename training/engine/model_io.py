"""Loading a base model (hub id or local folder, one code path), its tokenizer and an adapter on top.

Used as a library by the trainer and the predictor; nothing here is run directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.engine.config import QuantSection


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def quantization_config(quant: QuantSection | str) -> Any:
    """The ``BitsAndBytesConfig`` for a recipe's quant section (or a bare mode); None for 'none'."""
    from transformers import BitsAndBytesConfig

    if isinstance(quant, str):
        quant = QuantSection(mode=quant)
    if quant.mode == "none":
        return None
    if quant.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quant.compute_dtype),
    )


def load_tokenizer(source: str | Path, *, revision: str | None = None, padding_side: str = "left") -> Any:
    """The tokenizer of a base (or of an adapter folder that ships its own).

    Left padding is the default because prediction reads the logits at the last position of every row.
    A tokenizer without a pad token (Llama 3) pads with EOS; attention masks hide it.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), revision=revision)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    base: str | Path,
    *,
    quant: QuantSection | str = "none",
    revision: str | None = None,
    dtype: str = "bfloat16",
    device: str | None = None,
) -> Any:
    """A causal LM from a hub id or a local folder, optionally bitsandbytes-quantized.

    On CPU everything runs in float32 (bf16 matmuls are slow there and the tiny model does not need the
    memory); quantized layers keep their own compute dtype.
    """
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    bnb = quantization_config(quant)
    load_dtype = torch_dtype(dtype) if device.startswith("cuda") else torch_dtype("float32")
    kwargs: dict[str, Any] = {"revision": revision, "dtype": load_dtype}
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        # Quantized weights cannot move after loading, so each DDP process (accelerate launch/torchrun
        # set LOCAL_RANK) must load straight onto its own GPU.
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": local_rank} if device.startswith("cuda") else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(str(base), **kwargs)
    if bnb is None:
        model.to(device)
    return model


def check_adapter_dir(adapter_dir: str | Path) -> None:
    """The one gate before peft reads an adapter folder: a version folder (it has a manifest) must pass
    ``read_version`` (checksums, no pickles); a bare training output must hold safetensors weights and
    no pickle-format file that peft might prefer or fall back to."""
    from training.engine.artifacts import MANIFEST, PICKLE_SUFFIXES, ArtifactError, read_version

    folder = Path(adapter_dir)
    if (folder / MANIFEST).is_file():
        read_version(folder)
        return
    if not (folder / "adapter_model.safetensors").is_file():
        raise ArtifactError(f"{folder} has no adapter_model.safetensors")
    unsafe = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES))
    if unsafe:
        raise ArtifactError(f"{folder} holds pickle-format files {unsafe}: refused")


def has_tokenizer_files(folder: str | Path) -> bool:
    return (Path(folder) / "tokenizer_config.json").is_file()


def load_for_inference(
    base: str | Path,
    adapter_dir: str | Path | None = None,
    *,
    quant: QuantSection | str = "none",
    revision: str | None = None,
    dtype: str = "bfloat16",
    device: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode: the base, plus the LoRA adapter when one is given.

    The adapter folder must hold safetensors weights only; ``artifacts.read_version`` checks a version
    before its folder gets here.
    """
    if adapter_dir is not None:
        check_adapter_dir(adapter_dir)
    tokenizer_source = adapter_dir if adapter_dir and has_tokenizer_files(adapter_dir) else base
    tokenizer = load_tokenizer(tokenizer_source, revision=None if tokenizer_source != base else revision)
    model = load_base_model(base, quant=quant, revision=revision, dtype=dtype, device=device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model.eval()
    return model, tokenizer

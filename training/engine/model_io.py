"""Loading a base model (hub id or local folder, one code path), its tokenizer and an adapter on top.

Used as a library by the trainer and the predictor; nothing here is run directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.engine.config import QuantSection

# Weight files in pickle format: loading one runs whatever code it holds, so a base made of them is refused.
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class BaseModelError(ValueError):
    """A base model that cannot be used: an unreachable or unknown hub id, a missing folder, or weights
    that are not safetensors. The message names the base and says what to do."""


@dataclass(frozen=True)
class BaseRef:
    """A base model named exactly, for lineage: a hub id and its commit, or a local folder's name and
    ``sha256:`` of its file manifest (never a server path)."""

    model: str
    revision: str
    local: bool

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "revision": self.revision, "local": self.local}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _check_local_weights(folder: Path, *, name: str) -> None:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = [n for n in names if n.lower().endswith(PICKLE_WEIGHTS)]
    if pickles:
        raise BaseModelError(
            f"base model '{name}' holds only pickle-format weights ({', '.join(pickles)}), which run code "
            "when loaded and are refused; convert them to safetensors on a trusted machine "
            "(save_pretrained(..., safe_serialization=True))."
        )
    raise BaseModelError(
        f"base model '{name}' has no *.safetensors weights; save the model with save_pretrained."
    )


def _looks_like_path(base: str) -> bool:
    return base.startswith(("/", "./", "../", "~")) or base.count("/") > 1 or "\\" in base


def base_label(base: str | Path) -> str:
    """How lineage names a base: a hub id as it is; a local folder by its name, never its server path."""
    name = str(base)
    if Path(name).expanduser().is_dir() or _looks_like_path(name):
        return Path(name).name
    return name


def base_check(base: str | Path, *, revision: str | None = None, timeout: float | None = None) -> Path | None:
    """Refuse, in seconds, a base that cannot be loaded safely; the local folder, or None for a hub id.

    A local folder must hold safetensors weights (a pickle-only folder is refused and nothing is read).
    A hub id is looked up on the hub (``timeout`` seconds, default ``HUB_TIMEOUT_S`` or 10) and must
    publish safetensors; with ``HF_HUB_OFFLINE`` set it must be in the local cache instead.
    """
    name = str(base)
    folder = Path(name).expanduser()
    if folder.is_dir():
        _check_local_weights(folder, name=name)
        return folder
    if _looks_like_path(name):
        raise BaseModelError(
            f"base model folder '{name}' does not exist; set BASE_MODEL to a folder holding config.json "
            "and *.safetensors, or to a Hugging Face hub id."
        )
    _hub_snapshot(name, revision=revision, timeout=timeout)
    return None


def _hub_snapshot(repo_id: str, *, revision: str | None, timeout: float | None) -> str:
    """The hub commit of ``repo_id`` at ``revision`` (checked to publish safetensors)."""
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        try:
            snapshot = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
        except Exception as exc:
            raise BaseModelError(
                f"base model '{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set "
                f"({_short(exc)}); download it once with network access, or set BASE_MODEL to a local folder."
            ) from exc
        _check_local_weights(snapshot, name=repo_id)
        return snapshot.name  # the cache names each snapshot folder by its commit
    wait = float(timeout if timeout is not None else os.environ.get("HUB_TIMEOUT_S") or 10)
    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=wait)
    except Exception as exc:
        raise BaseModelError(
            f"base model '{repo_id}' cannot be downloaded: {_short(exc)}; check the hub id and that "
            "huggingface.co is reachable (or set HF_HUB_OFFLINE=1 with the model cached), or set "
            "BASE_MODEL to a local folder."
        ) from exc
    files = [sibling.rfilename for sibling in info.siblings or []]
    if files and not any(f.endswith(".safetensors") for f in files):
        raise BaseModelError(
            f"base model '{repo_id}' publishes no safetensors weights (only {', '.join(files[:5])}); "
            "pickle weights are refused: pick a repository or revision with *.safetensors."
        )
    return str(info.sha or revision or "")


def folder_manifest_sha256(folder: Path) -> str:
    """sha256 of a folder's manifest: every file's relative name and sha256, sorted."""
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        entries[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def base_ref(base: str | Path, *, revision: str | None = None, timeout: float | None = None) -> BaseRef:
    """``base_check`` plus the exact name of the base for lineage (see ``BaseRef``)."""
    folder = base_check(base, revision=revision, timeout=timeout)
    if folder is not None:
        return BaseRef(model=folder.name, revision=f"sha256:{folder_manifest_sha256(folder)}", local=True)
    return BaseRef(
        model=str(base), revision=_hub_snapshot(str(base), revision=revision, timeout=timeout), local=False
    )


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

    if not Path(str(source)).is_dir():
        base_check(source, revision=revision)  # an unreachable hub id fails here in seconds
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
    """A causal LM from a hub id or a local folder (safetensors weights only), optionally quantized.

    On CPU everything runs in float32 (bf16 matmuls are slow there and the tiny model does not need the
    memory); quantized layers keep their own compute dtype.
    """
    from transformers import AutoModelForCausalLM

    base_check(base, revision=revision)  # before anything is read: a pickle-only base is refused
    device = device or default_device()
    bnb = quantization_config(quant)
    load_dtype = torch_dtype(dtype) if device.startswith("cuda") else torch_dtype("float32")
    # safetensors only: never fall back to a pickle (pytorch_model.bin) that would run code when loaded.
    kwargs: dict[str, Any] = {"revision": revision, "dtype": load_dtype, "use_safetensors": True}
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

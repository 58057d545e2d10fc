"""Upload an export to the Hugging Face Hub: one model repo, one commit, only the export's own files.

The export format itself (what the folder holds, and how it loads) is `export.py`'s; this module only
talks to the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from .errors import VisionStudiesError
from .export import EXPORT_FILES, WEIGHTS_FILE, ExportNotFound, read_config

__all__ = ["push_to_hub", "PushResult", "MissingToken"]


class MissingToken(VisionStudiesError, PermissionError):
    """No Hugging Face token where huggingface_hub looks for one (HF_TOKEN, or the saved login)."""


@dataclass
class PushResult:
    """What `push_to_hub` uploaded, or would upload on a dry run: paths in the repo and their sizes."""

    repo_id: str
    files: list[tuple[str, int]]
    dry_run: bool
    url: str | None = None

    def __str__(self) -> str:
        head = f"{'would upload' if self.dry_run else 'uploaded'} to {self.repo_id}" + (f" ({self.url})" if self.url else "")
        return "\n".join([head] + [f"  {name}  {size:,} bytes" for name, size in self.files])


def push_to_hub(
    folder: Path | str,
    repo_id: str,
    *,
    private: bool | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload model exported by vision-studies",
    endpoint: str | None = None,
) -> PushResult:
    """Create the model repo `repo_id` if needed and upload the export in `folder` in one commit.

    The token is huggingface_hub's own lookup (the ``HF_TOKEN`` environment variable, the login saved by
    ``hf auth login``, or in Colab the ``HF_TOKEN`` secret: its ``get_token`` asks google.colab.userdata
    itself, huggingface_hub#1895); it is never an argument here, so it cannot end up in a notebook's
    parameters or its output. `dry_run` lists what would be uploaded and touches neither the network nor the token.
    """
    folder = Path(folder)
    read_config(folder)  # refuse to upload a folder that is not an export
    if not (folder / WEIGHTS_FILE).is_file():
        raise ExportNotFound(f"{folder / WEIGHTS_FILE} does not exist; export the learner with export.export_learner first")
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    names = list(filter_repo_objects(local, allow_patterns=EXPORT_FILES, ignore_patterns=DEFAULT_IGNORE_PATTERNS))
    files = [(name, (folder / name).stat().st_size) for name in names]
    if dry_run:
        return PushResult(repo_id, files, dry_run=True)
    if get_token() is None:
        raise MissingToken(
            "no Hugging Face token found: log in once with `hf auth login`, or set the HF_TOKEN environment "
            "variable; in Colab, add HF_TOKEN to its Secrets (the key icon) and give this notebook access "
            "(never put the token in a notebook or its parameters)"
        )
    api = HfApi(endpoint=endpoint)
    repo = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo.repo_id, repo_type="model", folder_path=folder, allow_patterns=EXPORT_FILES,
        commit_message=commit_message,
    )
    return PushResult(repo.repo_id, files, dry_run=False, url=commit.commit_url)

"""Push an exported experiment to the Hugging Face Hub.

    push_experiment("my-run", "me/my-model", private=True)   # -> the repo URL

The token comes from `settings.get_secret('hf_token')` (HF_TOKEN in the environment wins). Every failure
(no token, a bad or unauthorised token, no network, an invalid repo id) becomes one LLMStudioError line;
the token is passed explicitly to huggingface_hub, never logged, and scrubbed from any message.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from llm_studio.errors import LLMStudioError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id \
            or repo_id.endswith((".", "-", ".git")):
        raise LLMStudioError(f"invalid Hub repository {repo_id!r}: use OWNER/NAME with letters, digits, "
                             "'.', '-' or '_'")
    return repo_id


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def push_experiment(name: str, repo_id: str, *, private: bool = False, checkpoint: str = "best",
                    dtype: str = "float32", folder: Path | None = None, token: str | None = None,
                    license: str | None = None) -> str:
    """Upload experiment `name` (its exported `folder`, or a fresh export) to `repo_id`; return its URL."""
    from llm_studio import settings
    from llm_studio.export.export import export_experiment

    check_repo_id(repo_id)
    token = token or settings.get_secret("hf_token")
    if not token:
        raise LLMStudioError("no Hugging Face token: save one in Settings or set HF_TOKEN")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with _hub_errors(repo_id, token):  # first: a bad token or no network fails before the slow merge
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    tmp: Path | None = None
    try:
        if folder is None:
            tmp = Path(tempfile.mkdtemp(prefix="llm-studio-push-"))
            folder = export_experiment(name, tmp / "model", checkpoint=checkpoint, dtype=dtype, license=license)
        with _hub_errors(repo_id, token):
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                     commit_message=f"Upload {name} from LLM Studio")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(getattr(info, "repo_url", None) or f"{api.endpoint}/{repo_id}")


@contextlib.contextmanager
def _hub_errors(repo_id: str, token: str) -> Iterator[None]:
    """Turn huggingface_hub's and the network's errors into one LLMStudioError line, token scrubbed."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    try:
        yield
    except HFValidationError as e:
        raise LLMStudioError(f"invalid Hub repository {repo_id!r}: {_scrub(str(e), token)}") from None
    except OfflineModeIsEnabled:
        raise LLMStudioError("cannot push: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE)") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            reason = "the token was refused (invalid, expired or without write access)"
        elif status == 404:
            reason = "repository or owner not found"
        else:
            reason = _scrub(str(e).splitlines()[0] if str(e) else e.__class__.__name__, token)
        raise LLMStudioError(f"cannot push to {repo_id}: {reason}" + (f" (HTTP {status})" if status else "")) from None
    except (OSError, ConnectionError) as e:
        raise LLMStudioError(f"cannot push to {repo_id}: cannot reach the Hub ({e.__class__.__name__})") from None
    except LLMStudioError:
        raise
    except Exception as e:  # noqa: BLE001 - httpx transport errors and the like: one line, no token
        first = str(e).splitlines()[0] if str(e) else ""
        raise LLMStudioError(f"cannot push to {repo_id}: {_scrub(first, token)} ({e.__class__.__name__})") from None

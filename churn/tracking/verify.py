"""A registered model's files, checked against the sha256 digests the registry holds for them.

MLflow runs Python from a model's folder when it loads it (the models-from-code ``model_code.py``
and the ``code/`` copy of churn's serving code), and that copy holds the skops trusted-type list.
So whoever can write the artifact store could run code in ``churn score``, ``monitor`` and
``serve``. At registration, :func:`record_digests` hashes every file of the version as stored and
writes the digests to the registry as one model-version tag. Before loading, :func:`verified_model`
downloads the version to a local folder, checks every file against that tag, and the caller loads
from that folder, never from the store again.

One JSON tag rather than one tag per file: it is written in one call, so a version never holds
half a list, and tag keys (250 characters, restricted characters) would bound the file paths. No
digest of the tag itself: it would live in the same registry, so whoever can change one can change both.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME
from mlflow.store.artifact.utils.models import get_model_name_and_version

from churn.config import ConfigError
from churn.tracking.store import TrackingError

DIGESTS_TAG = "churn.sha256"  # {"relative/path": "sha256 hex", ...} of the version's files
# MLflow accepts model-version tag values of 100,000 characters, but registries created before its
# migration bda7b8c39065 store them as VARCHAR(5000); a longer list is refused, never truncated.
DIGESTS_MAX_CHARS = 5000


class ArtifactMismatchError(ConfigError):
    """A model version's files differ from the digests recorded at its registration."""


@dataclass(frozen=True)
class VerifiedModel:
    """A model version downloaded to ``path``, every file matching the registry's digests."""

    path: Path
    name: str
    version: str


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by path relative to it (``/``-separated), but for the
    ``registered_model_meta`` MLflow writes on download (name and version, not stored, always
    overwritten)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel == REGISTERED_MODEL_META_FILE_NAME:
            continue
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            out[rel] = "not a regular file"  # matches no digest
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()  # model files: MBs at most
    return out


def mismatch(expected: dict[str, str], actual: dict[str, str]) -> str | None:
    """What differs between the recorded and the present files, naming the first file; None if nothing."""
    problems = []
    for rel in sorted(expected.keys() | actual.keys()):
        if rel not in actual:
            problems.append(f"{rel} is missing")
        elif rel not in expected:
            problems.append(f"{rel} is not in the registered model")
        elif actual[rel] != expected[rel]:
            problems.append(f"{rel} differs from its recorded sha256")
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else "")


def _recorded(value: str, what: str) -> dict[str, str]:
    """The digests of a version's tag; anything but a JSON object of strings is refused."""
    try:
        digests = json.loads(value)
    except ValueError:
        digests = None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ArtifactMismatchError(f"model_uri: {what}: its {DIGESTS_TAG} tag is not a list of digests")
    return digests


def _download(name: str, version: str, into: Path) -> Path:
    """The version's files downloaded to ``into`` (MLflow adds its ``registered_model_meta`` there)."""
    uri = f"models:/{name}/{version}"
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"cannot download {uri} to {into}: {getattr(exc, 'message', exc)}") from None


def record_digests(name: str, version: str) -> dict[str, str]:
    """Hash the files of version ``version`` of ``name`` as stored, and tag the version with them."""
    with tempfile.TemporaryDirectory(prefix="churn-digests-") as tmp:
        digests = file_digests(_download(name, version, Path(tmp)))
    value = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    if len(value) > DIGESTS_MAX_CHARS:
        raise ConfigError(f"model {name} version {version}: the digests of its {len(digests)} files take "
                          f"{len(value)} characters, more than a registry tag holds ({DIGESTS_MAX_CHARS})")
    mlflow.MlflowClient().set_model_version_tag(name, version, DIGESTS_TAG, value)
    return digests


def verified_model(model_uri: str, into: Path | None = None) -> VerifiedModel:
    """Download the registered version ``model_uri`` names into ``into`` (default: a temporary
    folder removed at exit) and check every file against the digests recorded at registration.

    Only a registered version (``models:/name@alias``, ``models:/name/version``) has digests;
    any other URI, a version without them, or a file added, missing or changed is refused with
    one line (:class:`ArtifactMismatchError` for the files, :class:`ConfigError` otherwise).
    """
    if not model_uri.startswith("models:/"):
        raise ConfigError(f"model_uri: {model_uri} is not a registered model (models:/NAME@ALIAS or "
                          "models:/NAME/VERSION); churn loads only models whose files the registry vouches for")
    client = mlflow.MlflowClient()
    try:
        resolved = get_model_name_and_version(client, model_uri)
        if len(resolved) != 2:  # models:/m-<id>: a logged model that was never registered
            raise ConfigError(f"model_uri: {model_uri} is a logged model, not a registered version "
                              "(models:/NAME@ALIAS or models:/NAME/VERSION)")
        name, version = resolved[0], str(resolved[1])
        recorded = client.get_model_version(name, version).tags.get(DIGESTS_TAG)
    except MlflowException as exc:
        raise ConfigError(f"model_uri: cannot load {model_uri}: {exc.message}") from None
    if recorded is None:
        raise ArtifactMismatchError(f"model_uri: {model_uri} (version {version} of {name}) has no {DIGESTS_TAG} "
                                    "tag, so its files cannot be checked; register it again with churn train "
                                    "--promote (the promotion gate cannot score a champion it cannot check, so "
                                    "without --promote the new version stays @challenger)")
    what = f"{model_uri} (version {version} of {name})"
    expected = _recorded(recorded, what)  # before the download: a bad tag leaves no unchecked copy
    if into is None:
        into = Path(tempfile.mkdtemp(prefix="churn-model-"))
        atexit.register(shutil.rmtree, into, ignore_errors=True)
    path = _download(name, version, into)
    problem = mismatch(expected, file_digests(path))
    if problem:
        shutil.rmtree(path, ignore_errors=True)  # no unchecked copy is left to load by mistake
        raise ArtifactMismatchError(f"model_uri: {what}: {problem}; refusing to load it")
    return VerifiedModel(path, name, version)

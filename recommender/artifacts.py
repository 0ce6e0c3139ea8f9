"""Model artifacts on disk under MODEL_STORE, each covered by a sha256 checksum."""

import hashlib
import logging
import shutil
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)


class ArtifactRefused(Exception):
    """The artifact is missing or does not match its recorded checksum."""


class ArtifactNotSaved(Exception):
    """The model store refused the artifact (read-only, full, not a directory)."""


def save_artifact(model, *, kind: str, name: str) -> tuple[Path, str]:
    """Writes the model under MODEL_STORE and returns (directory, checksum). A write the
    store refuses leaves nothing behind: a half-written directory would otherwise be
    mistaken for an artifact by whoever looks at the store next."""
    directory = artifact_directory(kind=kind, name=name)
    try:
        model.save(directory)
        return directory, directory_checksum(directory)
    except BaseException as error:  # a time limit or Keras's own errors included
        remove_artifact(directory)
        if not isinstance(error, OSError):
            raise
        reason = error.strerror or str(error)
        raise ArtifactNotSaved(
            f"Could not save the {kind} artifact to {directory}: {reason} "
            f"(errno {error.errno}). Check that MODEL_STORE ({settings.MODEL_STORE}) is "
            "writable and has free space; the active version keeps serving.") from error


def artifact_directory(*, kind: str, name: str) -> Path:
    return Path(settings.MODEL_STORE) / kind / name


def directory_checksum(directory: Path) -> str:
    """sha256 over every file's relative path and bytes, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def verify_artifact(*, directory: Path, checksum: str) -> None:
    if not directory.is_dir() or not any(directory.iterdir()):
        raise ArtifactRefused(f"artifact directory {directory} is missing or empty")
    actual = directory_checksum(directory)
    if actual != checksum:
        raise ArtifactRefused(f"artifact {directory} has checksum {actual[:12]}..., "
                              f"expected {checksum[:12]}...: refusing to load it")


def remove_artifact(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def load_verified_model(*, kind: str, name: str, checksum: str):
    """The model of a registered version, after its checksum matched; raises ArtifactRefused
    (or OSError/ValueError for an unreadable artifact) otherwise."""
    directory = artifact_directory(kind=kind, name=name)
    verify_artifact(directory=directory, checksum=checksum)
    if kind == "recommender":
        from recommender.ml.two_tower import TwoTowerModel

        return TwoTowerModel.load(directory)
    from recommender.ml.encoder_sentiment import load_sentiment_model

    return load_sentiment_model(directory)

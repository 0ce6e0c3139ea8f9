import pytest

from recommender.artifacts import (
    ArtifactRefused,
    artifact_directory,
    directory_checksum,
    remove_artifact,
    verify_artifact,
)


@pytest.fixture
def artifact(tmp_path):
    directory = tmp_path / "v1"
    (directory / "sub").mkdir(parents=True)
    (directory / "weights.npz").write_bytes(bytes(range(256)) * 10)
    (directory / "sub" / "meta.json").write_text('{"a": 1}')
    return directory


def test_checksum_is_stable_and_verifies(artifact):
    checksum = directory_checksum(artifact)

    assert checksum == directory_checksum(artifact) and len(checksum) == 64
    verify_artifact(directory=artifact, checksum=checksum)


@pytest.mark.parametrize("damage", ["flip", "rename", "extra", "truncate"])
def test_any_change_is_refused(artifact, damage):
    checksum = directory_checksum(artifact)
    weights = artifact / "weights.npz"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[100] ^= 0x01
        weights.write_bytes(data)
    elif damage == "rename":
        weights.rename(artifact / "weights2.npz")
    elif damage == "extra":
        (artifact / "stray.txt").write_text("x")
    else:
        weights.write_bytes(weights.read_bytes()[:-1])

    with pytest.raises(ArtifactRefused, match="checksum"):
        verify_artifact(directory=artifact, checksum=checksum)


def test_missing_or_empty_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactRefused, match="missing"):
        verify_artifact(directory=tmp_path / "nope", checksum="0" * 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactRefused, match="missing or empty"):
        verify_artifact(directory=tmp_path / "empty", checksum="0" * 64)


def test_artifact_directory_is_under_the_model_store(settings, tmp_path, artifact):
    settings.MODEL_STORE = tmp_path / "store"

    assert artifact_directory(kind="recommender", name="v9") == tmp_path / "store" / \
        "recommender" / "v9"
    remove_artifact(artifact)
    assert not artifact.exists()

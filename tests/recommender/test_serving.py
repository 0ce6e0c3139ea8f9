"""Hot swap and refused artifacts: what serves while versions are promoted or broken."""

import logging
import shutil

import pytest

from recommender import serving as serving_module
from recommender.artifacts import artifact_directory
from recommender.models import ModelKind
from recommender.serving import loaded_versions, registry, serving_version
from recommender.services import promote_version, set_traffic_split
from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    get_recommendations,
    register_model,
    serving,
    store_planted_data,
    trained_model,
)

pytestmark = pytest.mark.django_db

USER = "u1-03"


@pytest.fixture
def two_versions(serving):
    store_planted_data()
    first = register_model(trained_model(), name="rec-v1")
    second = register_model(trained_model(), name="rec-v2", activate=False)
    return first, second


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)


def test_promoting_a_version_swaps_the_model_without_a_restart(client_app, two_versions):
    first, second = two_versions
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"

    promote_version(version_id=second.pk, actor="test")

    body = get_recommendations(client_app, user_id=USER)
    assert body["model_version"] == "rec-v2" and body["strategy"] == "two_tower"


def test_a_request_holding_the_old_snapshot_still_completes(two_versions):
    first, second = two_versions
    in_flight = serving_version(kind=ModelKind.RECOMMENDER)
    assert in_flight.name == "rec-v1"

    promote_version(version_id=second.pk, actor="test")
    swapped = serving_version(kind=ModelKind.RECOMMENDER)

    assert swapped is not in_flight and swapped.name == "rec-v2"
    assert in_flight.name == "rec-v1" and in_flight.version_id == first.pk
    # The old model object is untouched and still answers.
    query = in_flight.model.query_embeddings([USER], [["c1-i00", "c1-i01"]])
    assert in_flight.model.score_items(query).shape == (1, len(in_flight.model.item_ids))


def test_no_refresh_before_model_refresh_seconds(client_app, two_versions, settings):
    first, second = two_versions
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    settings.MODEL_REFRESH_SECONDS = 3600

    promote_version(version_id=second.pk, actor="test")

    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    settings.MODEL_REFRESH_SECONDS = 0
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v2"


@pytest.mark.parametrize("damage", ["flipped-byte", "missing", "emptied"])
def test_a_refused_artifact_is_logged_and_the_previous_version_keeps_serving(
        client_app, two_versions, caplog, damage):
    first, second = two_versions
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    promote_version(version_id=second.pk, actor="test")
    # Damaged after promotion (the registry refuses to promote a broken artifact), e.g. on
    # another machine's disk or by a bad copy.
    directory = artifact_directory(kind=ModelKind.RECOMMENDER, name=second.name)
    if damage == "flipped-byte":
        _flip_a_byte(directory / "weights.npz")
    elif damage == "missing":
        shutil.rmtree(directory)
    else:
        for path in directory.iterdir():
            path.unlink()
    with caplog.at_level(logging.ERROR, logger="recommender.serving"):
        body = get_recommendations(client_app, user_id=USER)

    assert body["model_version"] == "rec-v1" and body["strategy"] == "two_tower"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "rec-v2" in errors[0].getMessage()
    assert "rec-v1 keeps serving" in errors[0].getMessage()
    report = loaded_versions()[ModelKind.RECOMMENDER]
    assert report["version"] == "rec-v1" and "rec-v2" in report["error"]


def test_a_refused_artifact_without_a_previous_version_falls_back_to_popular(client_app,
                                                                             serving, caplog):
    store_planted_data()
    version = register_model(trained_model(), name="rec-broken")
    _flip_a_byte(artifact_directory(kind=ModelKind.RECOMMENDER, name=version.name)
                 / "metadata.json")

    with caplog.at_level(logging.ERROR, logger="recommender.serving"):
        body = get_recommendations(client_app, user_id=USER)

    assert body["strategy"] == "popular" and body["model_version"] is None
    assert any("rec-broken" in r.getMessage() for r in caplog.records)
    report = loaded_versions()[ModelKind.RECOMMENDER]
    assert report["loaded"] is False and report["serving"] == "popular"


def test_a_refused_artifact_is_not_reread_on_every_refresh(client_app, two_versions,
                                                           monkeypatch):
    first, second = two_versions
    get_recommendations(client_app, user_id=USER)
    promote_version(version_id=second.pk, actor="test")
    _flip_a_byte(artifact_directory(kind=ModelKind.RECOMMENDER, name=second.name)
                 / "weights.npz")
    checks = []
    real_load = serving_module.load_verified_model
    monkeypatch.setattr(serving_module, "load_verified_model",
                        lambda **kw: checks.append(kw) or real_load(**kw))

    for _ in range(3):
        assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"

    assert len(checks) == 1
    monkeypatch.setattr(serving_module, "REFUSED_RETRY_SECONDS", 0)
    get_recommendations(client_app, user_id=USER)
    assert len(checks) == 2


def test_an_ab_candidate_serves_the_users_in_its_bucket(client_app, two_versions):
    first, second = two_versions
    set_traffic_split(version_id=second.pk, percent=100, actor="test")

    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v2"
    set_traffic_split(version_id=second.pk, percent=0, actor="test")
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"


def test_readiness_reports_what_serves(two_versions):
    report = loaded_versions()

    assert report[ModelKind.RECOMMENDER]["serving"] == "rec-v1"
    assert report[ModelKind.RECOMMENDER]["loaded"] is True
    assert report[ModelKind.SENTIMENT]["serving"] == "vader"
    registry.reset()

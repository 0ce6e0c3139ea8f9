"""Hot swap and refused artifacts: what serves while versions are promoted or broken."""

import logging
import shutil
import threading

import pytest
from django.utils import timezone

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


@pytest.fixture
def in_background(settings):
    """As a deployed process runs: a version promoted after its first load is loaded in a
    background thread."""
    settings.MODEL_LOAD_IN_BACKGROUND = True


class _HeldLoads:
    """Once `holding` is set, load_verified_model sets `started` and waits for `release`
    (set at teardown whatever happens, so no loader outlives its test)."""

    def __init__(self) -> None:
        self.holding, self.started, self.release = (threading.Event(), threading.Event(),
                                                     threading.Event())


@pytest.fixture
def held_loads(monkeypatch):
    held = _HeldLoads()
    real_load = serving_module.load_verified_model

    def held_load(**kwargs):
        if held.holding.is_set():
            held.started.set()
            assert held.release.wait(timeout=30)
        return real_load(**kwargs)

    monkeypatch.setattr(serving_module, "load_verified_model", held_load)
    yield held
    held.release.set()
    _finish_loading()


def _finish_loading() -> None:
    for load in list(registry.loaders.values()):
        load.thread.join(timeout=120)
        assert not load.thread.is_alive()
    assert not registry.loaders


def test_in_the_background_the_previous_version_serves_until_the_promoted_one_loaded(
        client_app, two_versions, in_background, held_loads, settings):
    first, second = two_versions
    # A process's first load is waited for: no answer from the fallback.
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    held_loads.holding.set()
    started, release = held_loads.started, held_loads.release
    promote_version(version_id=second.pk, actor="test")

    # The request that noticed the promotion answers at once, with the version loaded.
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    assert started.wait(timeout=30)
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    # Once loaded, the next request serves it without waiting out the refresh interval.
    settings.MODEL_REFRESH_SECONDS = 3600
    release.set()
    _finish_loading()

    body = get_recommendations(client_app, user_id=USER)
    assert body["model_version"] == "rec-v2" and body["strategy"] == "two_tower"
    assert not registry.loaded_in_background  # handed over, not kept twice


def test_a_version_refused_in_the_background_is_reported_and_tried_again(
        client_app, two_versions, in_background, held_loads, caplog, monkeypatch):
    first, second = two_versions
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    held_loads.holding.set()
    started, release = held_loads.started, held_loads.release
    promote_version(version_id=second.pk, actor="test")
    weights = artifact_directory(kind=ModelKind.RECOMMENDER, name=second.name) / "weights.npz"
    _flip_a_byte(weights)

    with caplog.at_level(logging.ERROR, logger="recommender.serving"):
        assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
        assert started.wait(timeout=30) and registry.loaders  # loading, not loaded inline
        release.set()
        _finish_loading()
        assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"

    assert any("rec-v2" in r.getMessage() and "rec-v1 keeps serving" in r.getMessage()
               for r in caplog.records)
    report = loaded_versions()[ModelKind.RECOMMENDER]
    assert report["version"] == "rec-v1" and "rec-v2" in report["error"]

    # Repaired, then tried again: still reported refused while the retry loads.
    _flip_a_byte(weights)
    monkeypatch.setattr(serving_module, "REFUSED_RETRY_SECONDS", 0)
    release.clear()
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    assert "rec-v2" in loaded_versions()[ModelKind.RECOMMENDER]["error"]
    release.set()
    _finish_loading()
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v2"
    assert loaded_versions()[ModelKind.RECOMMENDER]["loaded"] is True


def test_a_version_loaded_in_the_background_after_another_was_promoted_is_let_go(
        client_app, serving, in_background, held_loads):
    store_planted_data()
    register_model(trained_model(), name="rec-v1")
    second = register_model(trained_model(), name="rec-v2", activate=False)
    third = register_model(trained_model(), name="rec-v3", activate=False)
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    held_loads.holding.set()
    release = held_loads.release
    promote_version(version_id=second.pk, actor="test")
    get_recommendations(client_app, user_id=USER)  # starts loading rec-v2
    promote_version(version_id=third.pk, actor="test")
    get_recommendations(client_app, user_id=USER)  # starts loading rec-v3
    release.set()
    _finish_loading()

    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v3"
    assert not registry.loaded_in_background


def test_a_load_that_hangs_is_reported_while_the_previous_version_serves(
        anonymous, client_app, two_versions, in_background, held_loads, caplog, settings):
    first, second = two_versions
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    held_loads.holding.set()
    promote_version(version_id=second.pk, actor="test")
    get_recommendations(client_app, user_id=USER)  # starts loading rec-v2
    assert held_loads.started.wait(timeout=30)
    assert loaded_versions()[ModelKind.RECOMMENDER]["warning"] is None  # not overdue yet

    settings.MODEL_LOAD_TIMEOUT_SECONDS = 0
    settings.MODEL_REFRESH_SECONDS = 0
    with caplog.at_level(logging.ERROR, logger="recommender.serving"):
        for _ in range(2):
            assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"
    overdue = [r.getMessage() for r in caplog.records if "MODEL_LOAD_TIMEOUT" in r.getMessage()]
    assert len(overdue) == 1 and "rec-v2" in overdue[0]  # logged once, not every refresh
    settings.CELERY_BROKER_URL = "memory://"  # readiness here is about the models
    readiness = anonymous.get("/readyz")
    report = readiness.json()["models"][ModelKind.RECOMMENDER]
    assert readiness.status_code == 200 and report["serving"] == "rec-v1"
    assert "rec-v2" in report["warning"] and "restart" in report["warning"]

    held_loads.release.set()
    _finish_loading()
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v2"
    assert loaded_versions()[ModelKind.RECOMMENDER]["warning"] is None


def test_an_ab_candidate_serves_the_users_in_its_bucket(client_app, two_versions):
    first, second = two_versions
    set_traffic_split(version_id=second.pk, percent=100, actor="test")

    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v2"
    set_traffic_split(version_id=second.pk, percent=0, actor="test")
    assert get_recommendations(client_app, user_id=USER)["model_version"] == "rec-v1"


def test_an_ab_split_serves_a_person_one_version_whichever_linked_id_asks(client_app,
                                                                           two_versions):
    from ingestion.services import link_identities
    from recommender.serving import ab_bucket

    first, second = two_versions
    set_traffic_split(version_id=second.pk, percent=50, actor="test")
    in_candidate = ab_bucket(kind=ModelKind.RECOMMENDER, user_id=USER) < 50
    # An anonymous id whose own bucket is on the other side of the split.
    anonymous_id = next(f"anon-{n}" for n in range(100)
                        if (ab_bucket(kind=ModelKind.RECOMMENDER, user_id=f"anon-{n}") < 50)
                        != in_candidate)
    link_identities(links=[(anonymous_id, USER)], linked_at=timezone.now())

    served = {get_recommendations(client_app, user_id=who)["model_version"]
              for who in (USER, anonymous_id)}
    assert served == {"rec-v2" if in_candidate else "rec-v1"}


def test_readiness_reports_what_serves(two_versions):
    report = loaded_versions()

    assert report[ModelKind.RECOMMENDER]["serving"] == "rec-v1"
    assert report[ModelKind.RECOMMENDER]["loaded"] is True
    assert report[ModelKind.SENTIMENT]["serving"] == "vader"
    registry.reset()

"""A model artifact changed on disk after its version was loaded: the process keeps
serving the copy it verified, logs it once, and /readyz says so; a process started after
the change refuses the artifact."""

import logging

import pytest

from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    get_recommendations,
    register_model,
    serving,
    store_planted_data,
    trained_model,
    user_id,
)

pytestmark = pytest.mark.django_db


def test_a_changed_artifact_is_reported_once_and_the_loaded_copy_keeps_serving(
        serving, client_app, anonymous, settings, caplog):
    from recommender.ml.two_tower import WEIGHTS_FILE
    from recommender.serving import registry

    settings.CELERY_BROKER_URL = "memory://"  # readiness here is about the model only
    store_planted_data()
    active = register_model(trained_model(), name="recommender-verified")
    params = {"user_id": user_id(0, 1), "k": 5}
    before = get_recommendations(client_app, **params)
    weights = serving / "recommender" / active.name / WEIGHTS_FILE
    original = weights.read_bytes()
    weights.write_bytes(original[:-64] + bytes(64))

    with caplog.at_level(logging.ERROR, logger="recommender.serving"):
        answers = [get_recommendations(client_app, **params) for _ in range(3)]
        ready = anonymous.get("/readyz")

    def ranking(answer: dict) -> tuple:
        return answer["model_version"], [(i["item_id"], i["score"]) for i in answer["items"]]

    assert all(ranking(answer) == ranking(before) for answer in answers)
    assert before["model_version"] == active.name
    changed = [r for r in caplog.records if "changed on disk" in r.getMessage()]
    assert len(changed) == 1
    assert ready.status_code == 200
    report = ready.json()["models"]["recommender"]
    assert report["serving"] == active.name and report["loaded"] is True
    assert "changed on disk" in report["warning"]

    registry.reset()  # what a process starting now sees
    restarted = anonymous.get("/readyz")
    assert restarted.status_code == 503
    assert "checksum" in restarted.json()["models"]["recommender"]["error"]

    weights.write_bytes(original)
    registry.reset()
    get_recommendations(client_app, **params)
    repaired = anonymous.get("/readyz").json()["models"]["recommender"]
    assert repaired["warning"] is None and repaired["loaded"] is True

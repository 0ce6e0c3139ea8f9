"""GET /api/v1/recommendations and /items/<id>/similar against a two-tower model trained on
planted taste clusters (trained once per test process, registered per test)."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ingestion.models import Item
from recommender.models import Impression
from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    assert_error_shape,
    cluster_of,
    get_recommendations,
    item_id,
    register_model,
    serving,
    store_planted_data,
    trained_model,
)

pytestmark = pytest.mark.django_db

USER = "u0-00"  # a cluster-0 user


@pytest.fixture
def shop(serving):
    interactions = store_planted_data()
    version = register_model(trained_model(), name="rec-planted")
    return {"interactions": interactions, "version": version}


START = datetime(2026, 1, 1, tzinfo=UTC)


def _bought_then_viewed_at_length(*, buyer, viewer) -> tuple[str, str]:
    """`buyer` bought cluster 0's first item; then `viewer` viewed its second more times
    than a request reads of a history. Returns the two item ids."""
    from ingestion.models import Event
    from recommender.recommendations import RECENT_INTERACTIONS

    bought, viewed = item_id(0, 0), item_id(0, 1)
    items = dict(Item.objects.filter(item_id__in=[bought, viewed]).values_list("item_id", "pk"))
    Event.objects.bulk_create(
        [Event(event_id=uuid.uuid4(), type="purchase", user=buyer, item_id=items[bought],
               timestamp=START, received_at=START)]
        + [Event(event_id=uuid.uuid4(), type="view", user=viewer, item_id=items[viewed],
                 timestamp=START + timedelta(minutes=n + 1), received_at=START)
           for n in range(RECENT_INTERACTIONS)])
    return bought, viewed


def _history(shop, user=USER) -> list[str]:
    frame = shop["interactions"]
    return frame[frame["user_id"] == user]["item_id"].tolist()


def _post_events(client, user: str, items: list[str], event_type: str = "click") -> None:
    response = client.post("/api/v1/events", {"batch": [
        {"event_id": str(uuid.uuid4()), "type": event_type, "user_id": user, "item_id": item}
        for item in items]}, format="json")
    assert response.status_code == 200 and response.json()["accepted"] == len(items)


def test_known_user_gets_two_tower_items_of_their_own_taste(client_app, shop):
    body = get_recommendations(client_app, user_id=USER, k=4)

    assert body["strategy"] == "two_tower"
    assert body["model_version"] == "rec-planted"
    assert len(body["items"]) == 4
    assert set(body["items"][0]) == {"item_id", "score", "title", "category"}
    # 4 of the 15 cluster-0 items are new to this user; the model ranks them near the top
    # (about 0.4 of 4 by chance among the ~45 unseen items).
    assert sum(cluster_of(i["item_id"]) == 0 for i in body["items"]) >= 2
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_a_new_event_changes_the_next_answer_without_retraining(client_app, shop):
    before = get_recommendations(client_app, user_id=USER, k=100)  # the full ranking
    # The user turns to cluster 2: views 10 cluster-2 items, then clicks each. (Clicks
    # alone moved the score gap below by 0.018-0.234 in trials, and once by -0.008: the
    # user's 11 cluster-0 events still weigh as much; views and clicks moved it 0.039-0.230.)
    new_taste = [item_id(2, j) for j in range(10)]
    _post_events(client_app, USER, new_taste, event_type="view")
    _post_events(client_app, USER, new_taste)

    after = get_recommendations(client_app, user_id=USER, k=100)

    assert after["model_version"] == before["model_version"] == "rec-planted"
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    assert not set(new_taste) & {i["item_id"] for i in after["items"]}  # now interacted

    def mean(values):
        return sum(values) / len(values)

    # The cluster-2 items still on offer pull ahead of the items of other clusters in score
    # (compared among the items listed both times). Their ranks are not asserted: the
    # user's 11 cluster-0 interactions still dominate, and in some trainings (TensorFlow on
    # the CPU does not repeat a run exactly) a cluster-2 item swaps places with a close
    # rival either way, although the score gap grew in every trial.
    ranked_before = [i["item_id"] for i in before["items"]]
    ranked_after = [i["item_id"] for i in after["items"]]
    remaining_two = [i for i in ranked_before if cluster_of(i) == 2 and i not in new_taste]
    others = [i for i in ranked_after if cluster_of(i) != 2 and i in ranked_before]

    def score_gap(body):
        scores = {i["item_id"]: i["score"] for i in body["items"]}
        return mean([scores[i] for i in remaining_two]) - mean([scores[i] for i in others])

    assert remaining_two and others
    assert score_gap(after) > score_gap(before)


def test_unknown_user_gets_popular_items_not_an_error(client_app, shop):
    body = get_recommendations(client_app, user_id="never-seen", k=5)

    assert body["strategy"] == "popular"
    assert body["model_version"] is None
    assert len(body["items"]) == 5


def test_without_a_trained_model_everyone_gets_popular_items(client_app, serving):
    interactions = store_planted_data()
    history = set(interactions[interactions["user_id"] == USER]["item_id"])

    body = get_recommendations(client_app, user_id=USER, k=5)

    assert body["strategy"] == "popular" and body["model_version"] is None
    assert len(body["items"]) == 5
    assert not history & {i["item_id"] for i in body["items"]}


def test_interacted_items_are_excluded_by_default_and_allowed_on_request(client_app, shop):
    history = set(_history(shop))

    default = get_recommendations(client_app, user_id=USER, k=30)
    allowed = get_recommendations(client_app, user_id=USER, k=30, exclude_interacted="false")

    assert not history & {i["item_id"] for i in default["items"]}
    assert history & {i["item_id"] for i in allowed["items"]}


def test_an_item_bought_before_a_long_history_is_still_left_out(client_app, shop):
    from ingestion.models import EndUser

    # A cluster-0 user bought one of the cluster's items long ago, then viewed one other
    # item more times than a request reads.
    shopper = EndUser.objects.create(user_id="heavy-user")
    bought, viewed = _bought_then_viewed_at_length(buyer=shopper, viewer=shopper)

    answer = get_recommendations(client_app, user_id="heavy-user", k=30)
    allowed = get_recommendations(client_app, user_id="heavy-user", k=30,
                                  exclude_interacted="false")

    assert answer["strategy"] == "two_tower"
    assert not {bought, viewed} & {row["item_id"] for row in answer["items"]}
    assert bought in {row["item_id"] for row in allowed["items"]}


def test_an_id_linked_a_moment_ago_has_its_older_items_left_out_too(client_app, shop):
    from ingestion.models import EndUser
    from ingestion.services import link_identities

    # Before signing up the shopper bought an item as an anonymous visitor; since, one
    # viewed item fills the history a request reads.
    anonymous = EndUser.objects.create(user_id="anon-shopper")
    shopper = EndUser.objects.create(user_id="signed-up")
    bought, _ = _bought_then_viewed_at_length(buyer=anonymous, viewer=shopper)
    # Every available item but the excluded ones fits in one answer.
    before = get_recommendations(client_app, user_id="signed-up", k=100)
    assert bought in {row["item_id"] for row in before["items"]}

    link_identities(links=[("anon-shopper", "signed-up")], linked_at=START)
    after = get_recommendations(client_app, user_id="signed-up", k=100)

    assert after["strategy"] == "two_tower"
    assert bought not in {row["item_id"] for row in after["items"]}


def test_the_model_reads_the_persons_traits_as_it_learned_them(client_app, shop,
                                                                monkeypatch):
    from ingestion.models import EndUser
    from recommender.ml.two_tower import TwoTowerModel

    EndUser.objects.filter(user_id=USER).update(traits={"plan": "pro", "seats": 3})
    asked = []
    query_embeddings = TwoTowerModel.query_embeddings

    def spy(self, user_ids, histories, traits=None):
        asked.append(traits)
        return query_embeddings(self, user_ids, histories, traits)

    monkeypatch.setattr(TwoTowerModel, "query_embeddings", spy)
    assert get_recommendations(client_app, user_id=USER)["strategy"] == "two_tower"
    # As training reads them (recommender.selectors.user_trait_map): values as text.
    assert asked == [[{"plan": "pro", "seats": "3"}]]


def test_exclude_parameter_is_honoured(client_app, shop):
    first = get_recommendations(client_app, user_id=USER, k=5)
    a, b = first["items"][0]["item_id"], first["items"][1]["item_id"]

    body = get_recommendations(client_app, user_id=USER, k=5, exclude=f"{a}, {b}")

    returned = {i["item_id"] for i in body["items"]}
    assert len(returned) == 5 and not {a, b} & returned
    popular = get_recommendations(client_app, user_id="cold", k=3)
    top = popular["items"][0]["item_id"]
    cold = get_recommendations(client_app, user_id="cold", k=3, exclude=top)
    assert top not in {i["item_id"] for i in cold["items"]}


@pytest.mark.parametrize("user", [USER, "cold-user"], ids=["two_tower", "popular"])
def test_deactivated_item_never_appears_even_right_after_deactivation(client_app, shop,
                                                                       settings, user):
    first = get_recommendations(client_app, user_id=user, k=5)
    top = first["items"][0]["item_id"]
    # Caches (catalog view, popular items, registry) stay warm: no refresh would notice.
    settings.MODEL_REFRESH_SECONDS = 3600

    response = client_app.post("/api/v1/items", {"items": [{"item_id": top, "is_active": False}]},
                               format="json")
    assert response.status_code == 200

    again = get_recommendations(client_app, user_id=user, k=5)
    assert top not in {i["item_id"] for i in again["items"]}
    assert len(again["items"]) == 5
    assert not Item.objects.get(item_id=top).is_active


def test_inactive_items_are_not_recommended(client_app, shop):
    Item.objects.filter(category="cat0").update(is_active=False)

    body = get_recommendations(client_app, user_id=USER, k=20)

    assert body["items"] and all(i["category"] != "cat0" for i in body["items"])


@pytest.mark.parametrize("user", [USER, "cold-user"], ids=["two_tower", "popular"])
def test_category_filter(client_app, shop, user):
    body = get_recommendations(client_app, user_id=user, k=5, category="cat3")

    assert len(body["items"]) == 5
    assert {i["category"] for i in body["items"]} == {"cat3"}
    assert get_recommendations(client_app, user_id=user, category="no-such")["items"] == []


def test_every_answer_is_logged_as_an_impression(client_app, shop):
    body = get_recommendations(client_app, user_id=USER, k=3)
    cold = get_recommendations(client_app, user_id="cold-user", k=2)

    impression = Impression.objects.get(rec_id=body["rec_id"])
    assert impression.user_id == USER
    assert impression.item_ids == [i["item_id"] for i in body["items"]]
    assert impression.model_version == shop["version"]
    assert impression.strategy == "two_tower" and impression.endpoint == "recommendations"
    cold_impression = Impression.objects.get(rec_id=cold["rec_id"])
    assert cold_impression.strategy == "popular" and cold_impression.model_version is None
    assert cold_impression.item_ids == [i["item_id"] for i in cold["items"]]


def test_similar_items_are_nearest_in_candidate_space(client_app, shop):
    response = client_app.get(f"/api/v1/items/{item_id(1, 0)}/similar", {"k": 5})

    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "two_tower" and body["model_version"] == "rec-planted"
    returned = [i["item_id"] for i in body["items"]]
    assert len(returned) == 5 and item_id(1, 0) not in returned
    assert sum(cluster_of(i) == 1 for i in returned) >= 3  # chance: 1.25 of 5
    expected = [i for i, _ in trained_model().similar_items(item_id(1, 0), 5)]
    assert returned == expected
    assert Impression.objects.get(rec_id=body["rec_id"]).endpoint == "similar"


def test_similar_items_of_an_unknown_item_is_a_404_in_the_error_shape(client_app, shop):
    response = client_app.get("/api/v1/items/no-such-item/similar")

    body = assert_error_shape(response, 404)
    assert body["code"] == "not_found"


def test_similar_items_fall_back_to_popular_in_category_without_a_model(client_app, serving):
    store_planted_data()

    response = client_app.get(f"/api/v1/items/{item_id(2, 3)}/similar", {"k": 4})

    body = response.json()
    assert response.status_code == 200
    assert body["strategy"] == "popular" and body["model_version"] is None
    assert len(body["items"]) == 4
    assert {i["category"] for i in body["items"]} == {"cat2"}
    assert item_id(2, 3) not in {i["item_id"] for i in body["items"]}


def test_similar_items_of_an_inactive_item_the_model_has_not_seen_fall_back(client_app, shop):
    # (An active one is placed by its category and title: see the test below.)
    client_app.post("/api/v1/items", {"items": [{"item_id": "brand-new", "category": "cat1",
                                                 "is_active": False}]}, format="json")

    body = client_app.get("/api/v1/items/brand-new/similar", {"k": 3}).json()

    assert body["strategy"] == "popular"
    assert {i["category"] for i in body["items"]} == {"cat1"}


@pytest.mark.django_db(transaction=True)
def test_answer_outside_a_transaction_checks_activity_and_logs_in_one_statement():
    """The per-request path as gunicorn runs it (autocommit, not inside a test transaction):
    inactive candidates are skipped, the impression lists exactly the answered items, and
    the connection is left outside any transaction."""
    from django.db import connection

    from recommender.recommendations import _answer

    for name, active in (("a", True), ("b", False), ("c", True), ("d", True)):
        Item.objects.create(item_id=f"one-stmt-{name}", title=f"T {name}", category="x",
                            is_active=active)
    session_setting = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            session_setting = cursor.fetchone()[0]
    ranked = [(f"one-stmt-{name}", score) for name, score in
              (("b", 0.95), ("a", 0.9), ("missing", 0.85), ("c", 0.8), ("d", 0.7))]

    answer = _answer(user_id="someone", ranked=ranked, k=2, loaded=None, strategy="popular",
                     endpoint="recommendations")

    assert [i["item_id"] for i in answer.items] == ["one-stmt-a", "one-stmt-c"]
    assert answer.items[0] == {"item_id": "one-stmt-a", "score": 0.9, "title": "T a",
                               "category": "x"}
    impression = Impression.objects.get(rec_id=answer.rec_id)
    assert impression.item_ids == ["one-stmt-a", "one-stmt-c"]
    assert impression.user_id == "someone" and impression.model_version is None
    assert not connection.in_atomic_block
    if connection.vendor == "postgresql":
        assert connection.connection.info.transaction_status == 0  # idle, committed
        with connection.cursor() as cursor:  # SET LOCAL did not leak into the session
            cursor.execute("SELECT current_setting('synchronous_commit')")
            assert cursor.fetchone()[0] == session_setting

    nothing = _answer(user_id="someone", ranked=[("one-stmt-b", 1.0)], k=2, loaded=None,
                      strategy="popular", endpoint="recommendations")
    assert nothing.items == []
    assert Impression.objects.get(rec_id=nothing.rec_id).item_ids == []


def test_a_new_visitor_on_a_category_page_gets_that_categorys_items(client_app, serving):
    from ingestion.models import Item

    # Only category "a" has been interacted with: the shop-wide popular list holds none
    # of "b", which still has items to show.
    for item_id, category in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")):
        Item.objects.create(item_id=item_id, category=category)
    client_app.post("/api/v1/events", {"batch": [
        {"type": "view", "user_id": "regular", "item_id": "a1"},
        {"type": "view", "user_id": "regular", "item_id": "a2"}]}, format="json")

    body = get_recommendations(client_app, user_id="newcomer", k=5, category="b")

    assert body["strategy"] == "popular"
    assert sorted(item["item_id"] for item in body["items"]) == ["b1", "b2"]


def test_an_item_moved_out_of_the_category_asked_for_is_not_served_in_it(serving):
    from ingestion.models import Item
    from recommender.recommendations import _answer

    Item.objects.create(item_id="moved", category="shoes")  # was "shirts" a moment ago
    Item.objects.create(item_id="stayed", category="shirts")

    answer = _answer(user_id="u", ranked=[("moved", 0.9), ("stayed", 0.8)], k=5, loaded=None,
                     strategy="popular", endpoint="recommendations", category="shirts")

    assert [item["item_id"] for item in answer.items] == ["stayed"]


def test_an_item_added_after_training_is_recommended_and_has_neighbours(client_app, shop):
    # Launched today, in cluster 0's category with its word in the title.
    Item.objects.create(item_id="c0-new", category="cat0", title="garden thing new")

    body = get_recommendations(client_app, user_id=USER, k=100)
    similar = client_app.get("/api/v1/items/c0-new/similar", {"k": 5}).json()

    assert body["strategy"] == "two_tower"
    scores = {row["item_id"]: row["score"] for row in body["items"]}
    other_clusters = sorted(score for item, score in scores.items()
                            if item != "c0-new" and cluster_of(item) != 0)
    # Ranked for this cluster-0 user as one of its cluster's items, above most others.
    assert scores["c0-new"] > other_clusters[len(other_clusters) * 3 // 4]
    assert similar["strategy"] == "two_tower"
    assert sum(cluster_of(row["item_id"]) == 0 for row in similar["items"]) >= 4


def test_requests_during_a_catalog_rebuild_answer_from_the_last_view(shop, settings,
                                                                     monkeypatch):
    from recommender import recommendations
    from recommender.models import ModelKind
    from recommender.serving import serving_version

    loaded = serving_version(kind=ModelKind.RECOMMENDER)
    last_view = recommendations._catalog_view(loaded)
    Item.objects.create(item_id="c0-new", category="cat0", title="garden thing new")
    settings.MODEL_REFRESH_SECONDS = 60
    recommendations._caches.fingerprint = (float("-inf"), ())
    model_class = type(loaded.model)
    with_catalog = model_class.with_catalog
    during_rebuild = {}

    def slow_with_catalog(model, items):
        if not during_rebuild:
            # Another request arrives while this one embeds the new item.
            request = threading.Thread(target=lambda: during_rebuild.update(
                view=recommendations._catalog_view(loaded)))
            request.start()
            request.join(timeout=10)
        return with_catalog(model, items)

    monkeypatch.setattr(model_class, "with_catalog", slow_with_catalog)
    rebuilt = recommendations._catalog_view(loaded)

    assert during_rebuild["view"] is last_view
    assert "c0-new" in rebuilt.model.row_by_item and "c0-new" not in last_view.model.row_by_item
    assert recommendations._catalog_view(loaded) is rebuilt


def test_answers_go_on_when_the_version_a_process_serves_is_deleted(client_app, shop,
                                                                     settings):
    from recommender.models import ModelVersion
    from recommender.serving import serving_version

    # The process holds the version until its next look at the registry.
    assert serving_version(kind="recommender").version_id == shop["version"].pk
    settings.MODEL_REFRESH_SECONDS = 600
    ModelVersion.objects.filter(pk=shop["version"].pk).delete()

    response = client_app.get("/api/v1/recommendations", {"user_id": USER, "k": 5})

    assert response.status_code == 200
    impression = Impression.objects.get(rec_id=response.json()["rec_id"])
    assert impression.model_version_id is None and len(impression.item_ids) == 5

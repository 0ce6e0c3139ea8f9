"""The recommender's API contract: parameters, authentication, the one error shape, and
POST /api/v1/sentiment with per-item errors."""

import hypothesis
import pytest
from hypothesis import strategies as st

from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    NASTY_TEXTS,
    sentiment_serving,
    assert_error_shape,
    get_recommendations,
    serving,
    store_planted_data,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("k", ["0", "101", "abc", "-3", "2.5"])
def test_bad_k_is_a_400_in_the_error_shape(client_app, serving, k):
    response = client_app.get("/api/v1/recommendations", {"user_id": "u1", "k": k})

    body = assert_error_shape(response, 400, attr="k")
    assert body["type"] == "validation_error"


def test_bad_k_on_similar_items_is_a_400(client_app, serving):
    store_planted_data()

    assert_error_shape(client_app.get("/api/v1/items/c0-i00/similar", {"k": "0"}), 400, attr="k")
    assert_error_shape(client_app.get("/api/v1/items/c0-i00/similar", {"k": "101"}), 400,
                       attr="k")


def test_an_item_id_with_a_nul_is_an_unknown_item(client_app, serving):
    store_planted_data()

    # PostgreSQL's driver refuses a NUL in a query: no stored id can hold one.
    body = assert_error_shape(client_app.get("/api/v1/items/c0-i00%00/similar"), 404)
    assert "c0-i00" in body["detail"]


def test_user_id_is_required(client_app, serving):
    assert_error_shape(client_app.get("/api/v1/recommendations"), 400, attr="user_id")


def test_bad_exclude_interacted_is_a_400(client_app, serving):
    response = client_app.get("/api/v1/recommendations",
                              {"user_id": "u1", "exclude_interacted": "perhaps"})

    assert_error_shape(response, 400, attr="exclude_interacted")


def test_k_bounds_are_inclusive(client_app, serving):
    store_planted_data()

    assert len(get_recommendations(client_app, user_id="cold", k=1)["items"]) == 1
    assert len(get_recommendations(client_app, user_id="cold", k=100)["items"]) == 60


def test_default_k_is_ten(client_app, serving):
    store_planted_data()

    assert len(get_recommendations(client_app, user_id="cold")["items"]) == 10


@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/recommendations?user_id=u1"),
    ("get", "/api/v1/items/c0-i00/similar"),
    ("post", "/api/v1/sentiment"),
])
def test_api_key_is_required(anonymous, db, method, path):
    response = getattr(anonymous, method)(path, {"texts": ["fine"]} if method == "post" else None,
                                          format="json")

    body = assert_error_shape(response, 401)
    assert body["code"] == "not_authenticated"


def test_a_wrong_api_key_is_refused(anonymous, db):
    anonymous.credentials(HTTP_AUTHORIZATION="Api-Key not.a-key")

    assert_error_shape(anonymous.get("/api/v1/recommendations", {"user_id": "u1"}), 401)


def test_sentiment_scores_each_text_with_vader_while_no_model_is_trained(client_app, serving):
    response = client_app.post("/api/v1/sentiment", {"texts": [
        "I love it, absolutely wonderful!", "Terrible. It broke and I hate it."]}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "vader"
    positive, negative = body["results"]
    assert positive["label"] == "positive" and positive["score"] > 0.5
    assert negative["label"] == "negative" and negative["score"] < 0.5


def test_sentiment_bad_items_get_per_item_errors_and_the_others_are_scored(client_app,
                                                                            serving):
    texts = ["Great value", "", "   ", "x" * 5001, 42, None, {"text": "hi"}, "Awful fit",
             "y" * 5000]

    response = client_app.post("/api/v1/sentiment", {"texts": texts}, format="json")

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert len(results) == len(texts)
    assert [("error" in r) for r in results] == [False, True, True, True, True, True, True,
                                                 False, False]
    assert "5000" in results[3]["error"]
    assert results[0]["label"] == "positive" and results[7]["label"] == "negative"
    assert set(results[8]) == {"label", "score", "scored_by"}


@pytest.mark.parametrize("body", [
    {"texts": ["ok"] * 101},
    {},
    {"texts": []},
    {"texts": "not a list"},
    {"text": ["wrong key"]},
], ids=["over-100", "missing", "empty", "string", "wrong-key"])
def test_sentiment_bad_request_is_a_400_in_the_error_shape(client_app, serving, body):
    response = client_app.post("/api/v1/sentiment", body, format="json")

    assert_error_shape(response, 400)


def test_sentiment_accepts_exactly_100_texts(client_app, serving):
    response = client_app.post("/api/v1/sentiment", {"texts": ["good"] * 100}, format="json")

    assert response.status_code == 200 and len(response.json()["results"]) == 100


@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(texts=st.lists(NASTY_TEXTS, min_size=1, max_size=5))
def test_any_text_gets_a_finite_score_or_a_per_text_error(client_app, sentiment_serving,
                                                         texts):
    response = client_app.post("/api/v1/sentiment", {"texts": texts}, format="json")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert len(results) == len(texts)
    for text, result in zip(texts, results, strict=True):
        if "error" in result:
            assert not text.strip() or len(text) > 5000
        else:
            assert 0.0 <= result["score"] <= 1.0 and result["scored_by"] in ("model", "lexicon")


def test_punctuation_only_is_scored_by_the_lexicon_not_a_500(client_app, sentiment_serving):
    response = client_app.post("/api/v1/sentiment", {"texts": ["!!!", "lovely soft"]},
                               format="json")
    assert response.status_code == 200
    assert [r["scored_by"] for r in response.json()["results"]] == ["lexicon", "model"]


def test_similar_items_of_an_id_holding_a_slash(client_app, serving):
    from ingestion.models import Item

    Item.objects.create(item_id="gid://shopify/Product/1", category="shirts")

    response = client_app.get("/api/v1/items/gid%3A%2F%2Fshopify%2FProduct%2F1/similar")

    assert response.status_code == 200, response.content
    assert response.json()["strategy"] == "popular"  # no model: the category's popular items
    assert client_app.get("/api/v1/items/gid%3A%2F%2Fshopify%2FProduct%2F2/similar"
                          ).status_code == 404

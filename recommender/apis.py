from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsClientApp
from config.query_params import NO_NUL, CategoryFilterField, QueryParamsSerializer
from recommender.recommendations import UnknownItem, recommend_for_user, similar_to_item
from recommender.sentiment_scoring import current_scorer

MAX_K = 100


class CommaSeparatedField(serializers.CharField):
    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        return frozenset(part.strip() for part in text.split(",") if part.strip())


class RecommendedItemSerializer(serializers.Serializer):
    item_id = serializers.CharField()
    score = serializers.FloatField()
    title = serializers.CharField()
    category = serializers.CharField()


class RecommendationOutputSerializer(serializers.Serializer):
    rec_id = serializers.UUIDField(help_text="Send it back on clicks and purchases")
    items = RecommendedItemSerializer(many=True)
    model_version = serializers.CharField(allow_null=True)
    strategy = serializers.ChoiceField(choices=["two_tower", "popular"])


class RecommendationsApi(APIView):
    permission_classes = [IsClientApp]

    class InputSerializer(QueryParamsSerializer):
        user_id = serializers.CharField(max_length=255, validators=[NO_NUL])
        k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=10)
        category = CategoryFilterField()
        exclude = CommaSeparatedField(required=False, allow_blank=True, default=frozenset())
        exclude_interacted = serializers.BooleanField(
            default=True, help_text="Leave out items the user already interacted with")

    @extend_schema(operation_id="recommendations", parameters=[InputSerializer],
                   responses={200: RecommendationOutputSerializer},
                   description="Personalised items for a user from their history as of now. "
                               "Unknown or cold users get popular items (strategy `popular`).")
    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        answer = recommend_for_user(**{**params.validated_data,
                                       "category": params.validated_data.get("category") or None})
        # Plain dicts (the documented RecommendationOutputSerializer's shape): building the
        # nested serializers cost about a millisecond of CPU per request.
        return Response({"rec_id": str(answer.rec_id),
                         "items": [{"item_id": str(item["item_id"]), "score": float(item["score"]),
                                    "title": str(item["title"]),
                                    "category": str(item["category"])}
                                   for item in answer.items],
                         "model_version": answer.model_version,
                         "strategy": answer.strategy})


class SimilarItemsApi(APIView):
    permission_classes = [IsClientApp]

    class InputSerializer(QueryParamsSerializer):
        k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=10)

    @extend_schema(operation_id="similar_items", parameters=[
        InputSerializer, OpenApiParameter("item_id", str, OpenApiParameter.PATH)],
        responses={200: RecommendationOutputSerializer})
    def get(self, request, item_id: str):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        try:
            # No stored id holds a NUL (PostgreSQL's text cannot), and its driver refuses
            # one in a query.
            if "\x00" in item_id:
                raise UnknownItem(item_id)
            answer = similar_to_item(item_id=item_id, **params.validated_data)
        except UnknownItem:
            raise exceptions.NotFound(f"No item with item_id {item_id!r}.") from None
        return Response(RecommendationOutputSerializer(answer).data)


class SentimentApi(APIView):
    permission_classes = [IsClientApp]
    MAX_TEXTS = 100
    MAX_CHARS = 5000

    class InputSerializer(serializers.Serializer):
        # Any JSON value per item (null included): a non-string is a per-item error,
        # not a reason to refuse the other texts.
        texts = serializers.ListField(child=serializers.JSONField(allow_null=True),
                                      min_length=1, max_length=100)

    class OutputSerializer(serializers.Serializer):
        model_version = serializers.CharField()
        results = serializers.ListField(child=serializers.DictField())

    @extend_schema(operation_id="sentiment", request=InputSerializer,
                   responses={200: OutputSerializer},
                   description="Label (negative/neutral/positive), probability positive and "
                               "`scored_by` (`model`, or `lexicon` where VADER scored the text: "
                               "while no trained model serves, or for a text the model has "
                               "no words for, such as \"!!!\") per text. Empty or over-long "
                               "texts get a per-item error. Send a review with a headline as "
                               "\"Headline. Body\": training reads reviews stored with a "
                               "`review_title` that way.")
    def post(self, request):
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        texts = body.validated_data["texts"]
        results: list[dict] = [{} for _ in texts]
        scorable = []
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                results[index] = {"error": "Text must be a non-empty string."}
            elif len(text) > self.MAX_CHARS:
                results[index] = {"error": f"Text is longer than {self.MAX_CHARS} characters."}
            else:
                scorable.append(index)
        scorer, version = current_scorer()
        if scorable:
            predictions = scorer.predict_with_source([texts[i] for i in scorable])
            for index, (label, score, source) in zip(scorable, predictions, strict=True):
                results[index] = {"label": label, "score": round(score, 6), "scored_by": source}
        return Response({"model_version": version, "results": results})

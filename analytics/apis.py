"""Read-only analytics endpoints for product managers and admins (session login only:
API keys belong to client apps and never open analytics)."""

from datetime import date, timedelta
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsProductManagerOrStaff
from analytics.insights import (
    common,
    funnels,
    items,
    lifecycle,
    overview,
    paths,
    recommendations,
    retention,
    sentiment,
    stickiness,
    trends,
    user_timeline,
)
from analytics.insights.common import (
    DEFAULT_FUNNEL_STEPS,
    DEFAULT_RANGE_DAYS,
    EARLIEST_DAY,
    LATEST_DAY,
    MAX_RANGE_DAYS,
    DateRange,
)
from config.query_params import NO_NUL, CategoryFilterField, QueryParamsSerializer


MAX_FUNNEL_STEPS = 8
# Non-blank names between commas; declared as the schema's patterns, so what the API
# refuses is what the schema says.
_NAME = r"[^,\x00]*[^,\s\x00][^,\x00]*"
STEPS_PATTERN = rf"^{_NAME}(,{_NAME}){{1,{MAX_FUNNEL_STEPS - 1}}}$"
MAX_TREND_EVENTS = 5
TREND_EVENTS_PATTERN = rf"^{_NAME}(,{_NAME}){{0,{MAX_TREND_EVENTS - 1}}}$"
PROPERTY_KEY_MAX_CHARS = 200
WHERE_PATTERN = r"^[^=\x00]+=[^\x00]*$"
COMPARE_PATTERN = rf"^{_NAME},{_NAME}$"
MAX_WINDOW_DAYS = 90


class FiltersInputSerializer(QueryParamsSerializer):
    """Query parameters shared by every analytics endpoint and dashboard. Validated data
    holds `date_range` (a DateRange) and `category` (None for all)."""

    start = serializers.DateField(required=False, help_text="First day, YYYY-MM-DD; "
                                                            "default 29 days before end")
    end = serializers.DateField(required=False, help_text="Last day (included), YYYY-MM-DD; "
                                                          "default today")
    category = CategoryFilterField(help_text="Only events on items of this category")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        end = self._within_bounds("end", attrs.pop("end", None)
                                  or common.default_date_range().end)
        start = self._within_bounds("start", attrs.pop("start", None)
                                    or end - timedelta(days=DEFAULT_RANGE_DAYS - 1))
        if start > end:
            raise serializers.ValidationError({"start": "start must be on or before end."},
                                              code="invalid_range")
        date_range = DateRange(start=start, end=end)
        if date_range.days > MAX_RANGE_DAYS:
            raise serializers.ValidationError(
                {"end": f"The range may cover at most {MAX_RANGE_DAYS} days (2 years)."},
                code="range_too_long")
        return {**attrs, "date_range": date_range, "category": attrs.get("category") or None}

    @staticmethod
    def _within_bounds(name: str, day: date) -> date:
        if not EARLIEST_DAY <= day <= LATEST_DAY:
            raise serializers.ValidationError(
                {name: f"Give a day from {EARLIEST_DAY} to {LATEST_DAY}."}, code="out_of_range")
        return day


class PeriodInputSerializer(FiltersInputSerializer):
    period = serializers.ChoiceField(choices=["day", "week"], required=False)


class AnalyticsApi(APIView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsProductManagerOrStaff]
    InputSerializer: type[serializers.Serializer] = FiltersInputSerializer

    def dispatch(self, request, *args, **kwargs):
        with common.analytics_queries():
            return super().dispatch(request, *args, **kwargs)

    def filters(self, request) -> dict[str, Any]:
        serializer = self.InputSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class OverviewApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        pass

    @extend_schema(
        operation_id="analytics_overview", parameters=[InputSerializer],
        responses={200: OpenApiTypes.OBJECT},
        description="DAU/WAU/MAU, stickiness (average DAU over MAU's 30 days / MAU), and "
                    "per day: active, new and returning users, events by type, purchases and "
                    "revenue.")
    def get(self, request):
        return Response(overview.overview(**self.filters(request)))


class FunnelApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        steps = serializers.CharField(
            required=False, default=",".join(DEFAULT_FUNNEL_STEPS),
            validators=[RegexValidator(STEPS_PATTERN, message=(
                f"Give between 2 and {MAX_FUNNEL_STEPS} comma-separated, non-blank steps."))],
            help_text="Comma-separated event types in order, e.g. view,add_to_cart,purchase "
                      "(any type name; one never sent counts no users)")
        window_days = serializers.IntegerField(
            required=False, default=7, min_value=1, max_value=MAX_WINDOW_DAYS,
            help_text="Every later step must happen within this many days of the first")
        breakdown = serializers.ChoiceField(
            choices=["category"], required=False,
            help_text="`category` adds the funnel per item category (a second, costlier pass)")

        def validate_steps(self, value: str) -> list[str]:
            return [step.strip() for step in value.split(",")]

    @extend_schema(
        operation_id="analytics_funnel", parameters=[InputSerializer],
        responses={200: inline_serializer("Funnel", fields={
            "steps": inline_serializer("FunnelStep", fields={
                "name": serializers.CharField(),
                "users": serializers.IntegerField(),
                "conversion": serializers.FloatField(allow_null=True,
                                                     help_text="From the previous step"),
                "overall_conversion": serializers.FloatField(allow_null=True),
                "median_seconds_from_previous": serializers.FloatField(allow_null=True),
            }, many=True),
            "window_days": serializers.IntegerField(),
            "overall_conversion": serializers.FloatField(allow_null=True),
            "breakdown": serializers.ListField(child=serializers.DictField()),
        })},
        description="Users who did the steps in order: step 1 is a user's first event of "
                    "that type in the range; each later step counts when it happens after "
                    "the user's previous step (or at its moment, for a type no earlier step "
                    "has) and within `window_days` of their first step. "
                    "With `breakdown=category`, `breakdown` repeats the funnel per item "
                    "category; otherwise it is empty.")
    def get(self, request):
        return Response(funnels.funnel(**{"breakdown": None, **self.filters(request)}))


class RetentionApi(AnalyticsApi):
    class InputSerializer(PeriodInputSerializer):
        pass

    @extend_schema(
        operation_id="analytics_retention", parameters=[InputSerializer],
        responses={200: OpenApiTypes.OBJECT},
        description="Cohorts by first-seen week (default, Monday-based) or day; `retention[n]` "
                    "is the share of the cohort active n periods later.")
    def get(self, request):
        return Response(retention.retention(**self.filters(request)))


class ItemsApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        order_by = serializers.ChoiceField(
            choices=["views", "revenue", "conversion", "average_rating"], required=False,
            default="views")
        limit = serializers.IntegerField(required=False, default=20, min_value=1,
                                         max_value=200)

    @extend_schema(
        operation_id="analytics_items", parameters=[InputSerializer],
        responses={200: OpenApiTypes.OBJECT},
        description="Top items and categories (views, conversion = purchasers / viewers, "
                    "revenue, average rating, review sentiment shares) and trending items "
                    "(view growth against the previous period of equal length; null for "
                    "items without views before it).")
    def get(self, request):
        # One shared pass over the events serves all three lists.
        return Response(items.item_report(**self.filters(request)))


class SentimentApi(AnalyticsApi):
    class InputSerializer(PeriodInputSerializer):
        limit = serializers.IntegerField(required=False, default=10, min_value=1,
                                         max_value=100)

    @extend_schema(
        operation_id="analytics_sentiment", parameters=[InputSerializer],
        responses={200: OpenApiTypes.OBJECT},
        description="Share of negative/neutral/positive reviews over time and per category, "
                    "and the items with the highest negative share (at least 3 reviews) with "
                    "their worst recent reviews.")
    def get(self, request):
        filters = self.filters(request)
        filters.setdefault("period", "day")
        return Response(sentiment.sentiment_summary(**filters))


class RecommendationsApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        compare = serializers.CharField(
            required=False, validators=[RegexValidator(COMPARE_PATTERN, message=(
                "Give two model version names: versionA,versionB."))],
            help_text="Two different model version names, `versionA,versionB`; default the "
                      "two with most personalised impressions (a name never served shows "
                      "none)")

        def validate_compare(self, value: str) -> tuple[str, str]:
            first, second = (name.strip() for name in value.split(","))
            if first == second:
                raise serializers.ValidationError("Give two different model version names.")
            return first, second

    @extend_schema(
        operation_id="analytics_recommendations", parameters=[InputSerializer],
        responses={200: OpenApiTypes.OBJECT},
        description="Impressions, CTR (impressions followed by a click carrying their rec_id) "
                    "and purchase conversion per model version and strategy, with a 95% "
                    "confidence interval (Agresti-Caffo) on the CTR and purchase-rate "
                    "differences of two versions' personalised recommendations (similar "
                    "items, always the active version's, left out of the comparison).")
    def get(self, request):
        return Response(recommendations.recommendation_performance(**self.filters(request)))


class TrendsApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        events = serializers.CharField(
            required=False, default="view",
            validators=[RegexValidator(TREND_EVENTS_PATTERN, message=(
                f"Give between 1 and {MAX_TREND_EVENTS} comma-separated, non-blank event types."))],
            help_text="Comma-separated event types, any name stored (e.g. search,signup)")
        measure = serializers.ChoiceField(choices=list(trends.MEASURES), required=False,
                                          default="count",
                                          help_text="count, users (distinct persons), sum or "
                                                    "average of the events' value")
        interval = serializers.ChoiceField(choices=list(trends.INTERVALS), required=False,
                                           default="day")
        breakdown = serializers.CharField(
            required=False, allow_blank=True, max_length=PROPERTY_KEY_MAX_CHARS,
            validators=[NO_NUL],
            help_text="`category` (the item's category) or a key of the events' properties; "
                      f"the {trends.MAX_BREAKDOWN_VALUES} most frequent values get their own "
                      "series, the rest one series `other`")
        where = serializers.CharField(
            required=False, allow_blank=True, max_length=2 * PROPERTY_KEY_MAX_CHARS,
            validators=[RegexValidator(WHERE_PATTERN, message="Give key=value, e.g. plan=pro.")],
            help_text="`key=value`: keep only events whose properties[key], as text, is value")
        compare = serializers.BooleanField(
            required=False, default=False,
            help_text="Also the range before: by day the days of equal number just before; "
                      "by week or month the same days as many weeks or months before as "
                      "the range has periods, so each period has its counterpart")

        def validate_events(self, value: str) -> list[str]:
            return list(dict.fromkeys(name.strip() for name in value.split(",")))

        def validate_where(self, value: str) -> tuple[str, str] | None:
            if not value:
                return None  # the page's empty field: no filter
            key, _, expected = value.partition("=")
            return key.strip(), expected

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            attrs = super().validate(attrs)
            event_types, where = attrs.pop("events"), attrs.pop("where", None)
            return {**attrs, "event_types": event_types, "property_filter": where,
                    "breakdown": attrs.get("breakdown") or None}

    @extend_schema(
        operation_id="analytics_trends", parameters=[InputSerializer],
        responses={200: inline_serializer("Trends", fields={
            "interval": serializers.CharField(),
            "measure": serializers.CharField(),
            "breakdown": serializers.CharField(allow_null=True),
            "periods": serializers.ListField(child=serializers.DateField(),
                                             help_text="First day of each period"),
            "previous_periods": serializers.ListField(child=serializers.DateField(),
                                                      allow_null=True),
            "series": inline_serializer("TrendSeries", fields={
                "event_type": serializers.CharField(),
                "breakdown_value": serializers.CharField(allow_null=True),
                "values": serializers.ListField(child=serializers.FloatField()),
                "total": serializers.FloatField(help_text="Counts and sums: over all periods; "
                                                          "users and averages: over the range"),
                "previous_values": serializers.ListField(child=serializers.FloatField(),
                                                         required=False),
                "previous_total": serializers.FloatField(required=False),
            }, many=True),
        })},
        description="How often the chosen events happened per day, week (from Monday) or "
                    "month: events counted, distinct persons, or the sum or average of "
                    "`value`; optionally filtered by one property and broken down by a "
                    "property or by item category, with the previous period beside it. An "
                    "event type or property key never sent is not an error: it shows zeros.")
    def get(self, request):
        return Response(trends.trends(**self.filters(request)))


class LifecycleApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        interval = serializers.ChoiceField(choices=list(trends.INTERVALS), required=False,
                                           default="week")

    @extend_schema(
        operation_id="analytics_lifecycle", parameters=[InputSerializer],
        responses={200: inline_serializer("Lifecycle", fields={
            "interval": serializers.CharField(),
            "periods": inline_serializer("LifecyclePeriod", fields={
                "period": serializers.DateField(help_text="First day of the period"),
                "new": serializers.IntegerField(),
                "returning": serializers.IntegerField(),
                "resurrecting": serializers.IntegerField(),
                "dormant": serializers.IntegerField(help_text="Negative: persons lost"),
            }, many=True),
        })},
        description="Per day, week (from Monday) or month: persons first seen in it (new), "
                    "also active the period before (returning), back after at least one "
                    "period away (resurrecting), and active the period before but not in "
                    "this one (dormant, as a negative count).")
    def get(self, request):
        return Response(lifecycle.lifecycle(**self.filters(request)))


class StickinessApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        interval = serializers.ChoiceField(choices=["week", "month"], required=False,
                                           default="week")

    @extend_schema(
        operation_id="analytics_stickiness", parameters=[InputSerializer],
        responses={200: inline_serializer("Stickiness", fields={
            "interval": serializers.CharField(),
            "person_periods": serializers.IntegerField(),
            "days": inline_serializer("StickinessDays", fields={
                "days": serializers.IntegerField(),
                "persons": serializers.IntegerField(),
                "share": serializers.FloatField(allow_null=True),
            }, many=True),
        })},
        description="How many persons were active on exactly 1, 2, ... 7 days of a week (or "
                    "1..31 days of a month), counted once per person and period in the range.")
    def get(self, request):
        return Response(stickiness.stickiness(**self.filters(request)))


class PathsApi(AnalyticsApi):
    class InputSerializer(FiltersInputSerializer):
        event = serializers.CharField(
            required=False, allow_blank=True, max_length=PROPERTY_KEY_MAX_CHARS,
            validators=[NO_NUL], help_text="The event type paths start at (or, looking "
                                           "before, end at); default: each person's first "
                                           "(or last) event")
        direction = serializers.ChoiceField(choices=["after", "before"], required=False,
                                            default="after",
                                            help_text="Steps after the event or before it")
        steps = serializers.IntegerField(required=False, default=paths.DEFAULT_STEPS,
                                         min_value=1, max_value=paths.MAX_STEPS)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            attrs = super().validate(attrs)
            event_type = (attrs.pop("event", "") or "").strip() or None
            return {**attrs, "event_type": event_type}

    @extend_schema(
        operation_id="analytics_paths", parameters=[InputSerializer],
        responses={200: inline_serializer("Paths", fields={
            "direction": serializers.ChoiceField(choices=["after", "before"]),
            "event_type": serializers.CharField(allow_null=True),
            "steps": serializers.IntegerField(),
            "persons": serializers.IntegerField(),
            "nodes": inline_serializer("PathNode", fields={
                "step": serializers.IntegerField(),
                "event_type": serializers.CharField(),
                "persons": serializers.IntegerField(),
                "continued": serializers.IntegerField(),
                "dropped_off": serializers.IntegerField(allow_null=True),
            }, many=True),
            "links": inline_serializer("PathLink", fields={
                "step": serializers.IntegerField(help_text="Step of the source"),
                "source": serializers.CharField(),
                "target": serializers.CharField(),
                "persons": serializers.IntegerField(),
            }, many=True),
            "paths": inline_serializer("PathSequence", fields={
                "events": serializers.ListField(child=serializers.CharField()),
                "persons": serializers.IntegerField(),
            }, many=True),
        })},
        description="The most common next (or previous) steps of persons, "
                    f"up to {paths.MAX_STEPS} deep, with persons and drop-off per step. "
                    "Repeats of one event type in a row are one step; past the "
                    f"{paths.EVENTS_PER_STEP} most common types a step's persons are "
                    "`other`.")
    def get(self, request):
        return Response(paths.paths(**self.filters(request)))


class UserTimelineApi(AnalyticsApi):
    class InputSerializer(QueryParamsSerializer):
        limit = serializers.IntegerField(required=False, default=user_timeline.DEFAULT_EVENT_LIMIT,
                                         min_value=1, max_value=1000)

    @extend_schema(
        operation_id="analytics_user_timeline", parameters=[InputSerializer],
        responses={200: OpenApiTypes.OBJECT},
        description="One person's events (theirs and their linked anonymous ids', newest "
                    "first), traits, review sentiment, and the recommendations they would get "
                    "now with the recent items behind them. Looking does not log an impression.")
    def get(self, request, user_id: str):
        # No stored id holds a NUL (PostgreSQL's text cannot), and its driver refuses one in
        # a query: no user, as for any id never seen.
        timeline = (None if "\x00" in user_id
                    else user_timeline.user_timeline(user_id=user_id, **self.filters(request)))
        if timeline is None:
            raise NotFound(f"No user with id {user_id!r} has been seen.")
        return Response(timeline)

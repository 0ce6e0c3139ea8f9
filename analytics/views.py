"""Dashboard pages for product managers and admins.

Each page validates its query string with the same input serializer as its API endpoint,
asks the insights (analytics/insights/) for data and turns it into summary cards, charts
(drawn in the browser by static/js/dashboards.js with the vendored Chart.js) and tables. Every table downloads as
CSV with `?format=csv&table=<name>` added to the page's query string.
"""

import csv
import json
from datetime import date, timedelta
from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils import timezone
from django.utils.text import slugify
from django.views import View
from rest_framework import serializers

from accounts.permissions import is_product_manager_or_staff
from analytics import apis
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
from config.db import is_statement_timeout, statement_timeout_message


Row = list[Any]
SERIES_COLORS = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
                 "#65a30d"]
SENTIMENT_COLORS = {"negative": "#dc2626", "neutral": "#94a3b8", "positive": "#16a34a"}


def _format(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "int":
        return f"{value:,}"
    if kind == "float":
        return f"{value:,.2f}"
    if kind == "duration":
        return _duration(value)
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def table(*, name: str, title: str, columns: list[tuple[str, str]], rows: list[Row],
          empty: str = "No data in this date range — widen the range or clear the category "
                       "filter.") -> dict[str, Any]:
    """columns are (heading, kind) with kind one of text, int, float, money, percent,
    duration; rows hold raw values (CSV gets them as they are, the page formatted)."""
    return {
        "name": name, "title": title, "columns": [heading for heading, _ in columns],
        "numeric_indexes": [index for index, (_, kind) in enumerate(columns) if kind != "text"],
        "rows": rows, "empty": empty,
        "display_rows": [[_format(value, kind) for value, (_, kind) in zip(row, columns,
                                                                           strict=True)]
                         for row in rows],
    }


def chart(*, chart_id: str, title: str, kind: str, labels: list[Any],
          series: list[tuple[str, list[Any]]], stacked: bool = False, percent: bool = False,
          horizontal: bool = False, colors: list[str] | None = None) -> dict[str, Any]:
    palette = colors or SERIES_COLORS
    return {
        "id": chart_id, "title": title, "type": kind, "labels": [str(label) for label in labels],
        "datasets": [{"label": label, "data": data,
                      "color": palette[index % len(palette)]}
                     for index, (label, data) in enumerate(series)],
        "stacked": stacked, "percent": percent, "horizontal": horizontal,
    }


def card(label: str, value: Any, kind: str = "int") -> dict[str, str]:
    return {"label": label, "value": _format(value, kind)}


class _PageTimedOut(Exception):
    """A page's reads ran past ANALYTICS_STATEMENT_TIMEOUT_SECONDS; `context` renders it."""

    def __init__(self, context: dict[str, Any]):
        super().__init__("statement timeout")
        self.context = context


# A cell starting with one of these is a formula to a spreadsheet, and item titles,
# categories, ids and review texts come from client apps (OWASP's "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_safe(cell: Any) -> Any:
    """Text that a spreadsheet would run as a formula, quoted with a leading apostrophe;
    numbers and other text as they are."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


class DashboardView(LoginRequiredMixin, UserPassesTestMixin, View):
    """A dashboard page: anonymous users go to the login page, logged-in users who are
    neither product managers nor staff get 403."""

    page: str = ""
    title: str = ""
    template_name = "analytics/dashboard.html"
    input_serializer: type[serializers.Serializer] = apis.FiltersInputSerializer

    def test_func(self) -> bool:
        return is_product_manager_or_staff(self.request.user)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            with common.analytics_queries():
                return super().dispatch(request, *args, **kwargs)
        except _PageTimedOut as timed_out:
            # Rendered after the reads' transaction has rolled back (on PostgreSQL the
            # cancelled statement aborted it).
            return render(request, self.template_name, timed_out.context, status=503)

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        """Returns the page's cards, charts, tables and any extra template context."""
        raise NotImplementedError

    def empty_state(self) -> str | None:
        """A message telling what to do when there is nothing to analyse yet."""
        if common.has_events():
            return None
        return ("No events yet — send events to POST /api/v1/events or run "
                "`manage.py seed_demo`.")

    def get(self, request: HttpRequest) -> HttpResponse:
        serializer = self.input_serializer(data=request.GET)
        default_range = common.default_date_range()
        context: dict[str, Any] = {
            "page": self.page, "title": self.title, "params": request.GET,
            "categories": common.category_list(),
            "form_start": request.GET.get("start") or default_range.start.isoformat(),
            "form_end": request.GET.get("end") or default_range.end.isoformat(),
            "presets": self.presets(request, today=default_range.end),
        }
        if not serializer.is_valid():
            context["errors"] = [f"{field}: {' '.join(str(m) for m in messages)}"
                                 if field != "non_field_errors" else " ".join(messages)
                                 for field, messages in serializer.errors.items()]
            return render(request, self.template_name, context, status=400)
        filters = serializer.validated_data
        if filters.get("date_range"):
            # The range shown, also where only one end was given (the other defaulted).
            context["form_start"] = filters["date_range"].start.isoformat()
            context["form_end"] = filters["date_range"].end.isoformat()
        try:
            content = self.build(filters)
        except DatabaseError as error:
            if not is_statement_timeout(error):
                raise
            context["errors"] = [statement_timeout_message()]
            raise _PageTimedOut(context) from error
        if request.GET.get("format") == "csv":
            return self.csv_response(content["tables"], request.GET.get("table", ""),
                                     filters.get("date_range"))
        query = request.GET.copy()
        query.pop("format", None)
        query.pop("table", None)
        context.update(content, filters=filters, empty_state=self.empty_state(),
                       query_string=query.urlencode())
        return render(request, self.template_name, context)

    @staticmethod
    def presets(request: HttpRequest, *, today: date) -> list[dict[str, str]]:
        """Links to the last 7, 30 and 90 days that keep the page's other parameters."""
        links = []
        for days in (7, 30, 90):
            query = request.GET.copy()
            query["start"] = (today - timedelta(days=days - 1)).isoformat()
            query["end"] = today.isoformat()
            for transient in ("format", "table"):
                query.pop(transient, None)
            links.append({"label": f"{days} days", "query": query.urlencode()})
        return links

    def csv_response(self, tables: list[dict[str, Any]], name: str,
                     date_range: common.DateRange | None) -> HttpResponse:
        chosen = next((t for t in tables if t["name"] == name), None)
        if chosen is None:
            names = ", ".join(t["name"] for t in tables)
            return HttpResponseBadRequest(f"Unknown table {name!r}; choose one of: {names}.",
                                          content_type="text/plain")
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        # A page without a date range (a user's timeline) is named by its table alone.
        period = f"-{date_range.start}-{date_range.end}" if date_range else ""
        filename = slugify(f"{self.page}-{chosen['name']}{period}")
        response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
        # A byte order mark: without it Excel reads the file in the system's code page, so
        # a name such as "Café" arrives as "CafÃ©"; spreadsheets and pandas skip it.
        response.write("\ufeff")
        writer = csv.writer(response)
        writer.writerow(chosen["columns"])
        writer.writerows([[_spreadsheet_safe(cell) for cell in row] for row in chosen["rows"]])
        return response


class OverviewView(DashboardView):
    page, title = "overview", "Overview"
    input_serializer = apis.OverviewApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        data = overview.overview(**filters)
        days = data["days"]
        labels = [day["date"] for day in days]
        event_types = list(data["events_by_type"])
        return {
            "cards": [card("DAU (last day)", data["dau"]), card("WAU", data["wau"]),
                      card("MAU", data["mau"]),
                      card("Stickiness (avg DAU / MAU)", data["stickiness"], "percent"),
                      card("Active users in range", data["active_users"]),
                      card("Events", data["events"]), card("Purchases", data["purchases"]),
                      card("Revenue", data["revenue"], "money")],
            "charts": [
                chart(chart_id="active-users", title="Active users per day", kind="line",
                      labels=labels, series=[
                          ("Active", [day["active_users"] for day in days]),
                          ("New", [day["new_users"] for day in days]),
                          ("Returning", [day["returning_users"] for day in days])]),
                chart(chart_id="events-by-type", title="Events by type per day", kind="bar",
                      labels=labels, stacked=True, series=[
                          (name, [day["events_by_type"].get(name, 0) for day in days])
                          for name in event_types]),
                chart(chart_id="revenue", title="Revenue per day", kind="bar", labels=labels,
                      series=[("Revenue", [day["revenue"] for day in days])],
                      colors=["#16a34a"]),
            ],
            "tables": [
                table(name="daily", title="Per day", columns=[
                    ("Date", "text"), ("Active users", "int"), ("New", "int"),
                    ("Returning", "int"), ("Events", "int"), ("Purchases", "int"),
                    ("Revenue", "money")],
                    rows=[[day["date"], day["active_users"], day["new_users"],
                           day["returning_users"], day["events"], day["purchases"],
                           day["revenue"]] for day in reversed(days)]),
                table(name="event-types", title="Events by type", columns=[
                    ("Type", "text"), ("Events", "int")],
                    rows=[[name, count] for name, count in data["events_by_type"].items()]),
            ],
        }


class FunnelView(DashboardView):
    page, title = "funnels", "Funnels"
    template_name = "analytics/funnels.html"
    input_serializer = apis.FunnelApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        # The category breakdown is asked for, not shown by default: it is a second pass over
        # the events, and at 10M events over 120 days it took 12.8 s where the funnel took
        # 1.9 s (benchmarks/README.md, session 17).
        data = funnels.funnel(**{"breakdown": None, **filters})
        steps = data["steps"]
        names = [step["name"] for step in steps]
        tables = [
            table(name="steps", title="Steps", columns=[
                ("Step", "text"), ("Users", "int"), ("From previous step", "percent"),
                ("From first step", "percent"), ("Median time from previous", "duration")],
                rows=[[step["name"], step["users"], step["conversion"],
                       step["overall_conversion"], step["median_seconds_from_previous"]]
                      for step in steps]),
        ]
        if filters.get("breakdown"):
            tables.append(table(
                name="by-category", title="By item category (every step on the same category)",
                columns=[("Category", "text"), *[(name, "int") for name in names],
                         ("Overall conversion", "percent")],
                rows=[[row["category"] or "(none)", *[step["users"] for step in row["steps"]],
                       row["steps"][-1]["overall_conversion"]] for row in data["breakdown"]]))
        return {
            "steps_value": ",".join(filters["steps"]),
            "cards": [card(f"Users who did “{names[0]}”", steps[0]["users"]),
                      card(f"Reached “{names[-1]}”", steps[-1]["users"]),
                      card("Overall conversion", data["overall_conversion"], "percent"),
                      card("Window (days)", data["window_days"])],
            "charts": [chart(chart_id="funnel", title="Users per step", kind="bar",
                             labels=names, horizontal=True,
                             series=[("Users", [step["users"] for step in steps])])],
            "tables": tables,
        }


class RetentionView(DashboardView):
    page, title = "retention", "Retention"
    template_name = "analytics/retention.html"
    input_serializer = apis.RetentionApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        filters.setdefault("period", "week")
        data = retention.retention(**filters)
        period = data["period"]
        offsets = list(range(data["periods"]))
        cohorts = data["cohorts"]
        # The curve weighs each cohort by its size, over the cohorts old enough to be seen.
        curve = []
        for offset in offsets:
            seen = [row for row in cohorts if len(row["active"]) > offset]
            size = sum(row["users"] for row in seen)
            curve.append(sum(row["active"][offset] for row in seen) / size if size else None)
        heading = "Week" if period == "week" else "Day"
        return {
            "period": period,
            "offsets": offsets,
            "heading": heading,
            "heatmap": [{"cohort": row["cohort"], "users": row["users"],
                         "cells": [{"share": share, "label": _format(share, "percent"),
                                    "alpha": round(0.08 + 0.92 * (share or 0), 3)}
                                   for share in row["retention"]]}
                        for row in cohorts],
            "cards": [card("Cohorts", len(cohorts)),
                      card("Users in cohorts", sum(row["users"] for row in cohorts)),
                      card(f"Active 1 {period} later", curve[1] if len(curve) > 1 else None,
                           "percent")],
            "charts": [chart(chart_id="retention-curve",
                             title=f"Share of a cohort active n {period}s after first seen",
                             kind="line", labels=[f"{heading} {n}" for n in offsets],
                             percent=True, series=[("All cohorts", curve)])],
            "tables": [table(
                name="cohorts", title="Cohorts",
                columns=[("Cohort", "text"), ("Users", "int"),
                         *[(f"{heading} {n}", "percent") for n in offsets]],
                rows=[[row["cohort"], row["users"],
                       *(row["retention"] + [None] * (len(offsets) - len(row["retention"])))]
                      for row in cohorts])],
        }


def _item_columns() -> list[tuple[str, str]]:
    return [("Views", "int"), ("Viewers", "int"), ("Purchases", "int"),
            # Buyers in the range over viewers in it (GA4's purchase-to-view rate): over 100%
            # where people who viewed before the range bought in it, so named as it is.
            ("Buyers / viewers", "percent"), ("Revenue", "money"), ("Avg rating", "float"),
            ("Reviews", "int"), ("Negative", "percent"), ("Positive", "percent")]


def _item_values(row: dict[str, Any]) -> Row:
    return [row["views"], row["viewers"], row["purchases"], row["conversion"], row["revenue"],
            row["average_rating"], row["reviews"], row["sentiment_shares"]["negative"],
            row["sentiment_shares"]["positive"]]


class ItemsView(DashboardView):
    page, title = "items", "Items"
    template_name = "analytics/items.html"
    input_serializer = apis.ItemsApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        report = items.item_report(**filters)
        item_rows, categories, trending = report["items"], report["categories"], report["trending"]
        top = item_rows[:10]
        order_choices = {"views": "Views", "revenue": "Revenue", "conversion": "Buyers / viewers",
                         "average_rating": "Avg rating"}
        order_by = filters["order_by"]
        # The bars show what the items were ranked by: views and purchases, or that figure.
        series = ([("Views", [row["views"] for row in top]),
                   ("Purchases", [row["purchases"] for row in top])] if order_by == "views"
                  else [(order_choices[order_by], [row[order_by] for row in top])])
        return {
            "order_by": order_by,
            "order_choices": list(order_choices.items()),
            "cards": [],
            "charts": [
                chart(chart_id="top-items", title=f"Top items by {order_choices[order_by].lower()}",
                      kind="bar", labels=[row["title"] or row["item_id"] for row in top],
                      horizontal=True, series=series, percent=order_by == "conversion"),
                chart(chart_id="category-revenue", title="Revenue by category", kind="bar",
                      labels=[row["category"] or "(none)" for row in categories],
                      series=[("Revenue", [row["revenue"] for row in categories])],
                      colors=["#16a34a"]),
            ],
            "tables": [
                table(name="items", title="Top items",
                      columns=[("Item", "text"), ("Title", "text"), ("Category", "text"),
                               *_item_columns()],
                      rows=[[row["item_id"], row["title"], row["category"], *_item_values(row)]
                            for row in item_rows]),
                table(name="categories", title="Categories",
                      columns=[("Category", "text"), *_item_columns()],
                      rows=[[row["category"] or "(none)", *_item_values(row)]
                            for row in categories]),
                table(name="trending", title="Trending (views against the previous period "
                                             "of equal length)",
                      columns=[("Item", "text"), ("Title", "text"), ("Category", "text"),
                               ("Views", "int"), ("Views before", "int"), ("Growth", "percent")],
                      rows=[[row["item_id"], row["title"], row["category"],
                             row["current_views"], row["previous_views"], row["growth"]]
                            for row in trending]),
            ],
        }


class SentimentView(DashboardView):
    page, title = "sentiment", "Sentiment"
    template_name = "analytics/sentiment.html"
    input_serializer = apis.SentimentApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        filters.setdefault("period", "day")
        data = sentiment.sentiment_summary(**filters)
        trend = data["trend"]
        labels = common.SENTIMENT_LABELS
        return {
            "period": filters["period"],
            "most_negative": data["most_negative_items"],
            "cards": [card("Scored reviews", data["reviews"]),
                      *[card(f"{label.title()} share", data["shares"][label], "percent")
                        for label in labels]],
            "charts": [chart(chart_id="sentiment-trend", title="Share of reviews by sentiment",
                             kind="line", percent=True,
                             labels=[row["date"] for row in trend],
                             colors=[SENTIMENT_COLORS[label] for label in labels],
                             series=[(label.title(), [row["shares"][label] for row in trend])
                                     for label in labels])],
            "tables": [
                table(name="categories", title="By category",
                      columns=[("Category", "text"), ("Reviews", "int"),
                               *[(label.title(), "percent") for label in labels]],
                      rows=[[row["category"] or "(none)", row["reviews"],
                             *[row["sentiment_shares"][label] for label in labels]]
                            for row in data["categories"]]),
                table(name="most-negative", title="Most negative items (at least 3 reviews)",
                      columns=[("Item", "text"), ("Title", "text"), ("Category", "text"),
                               ("Reviews", "int"),
                               *[(label.title(), "percent") for label in labels]],
                      rows=[[row["item_id"], row["title"], row["category"], row["reviews"],
                             *[row["sentiment_shares"][label] for label in labels]]
                            for row in data["most_negative_items"]]),
                table(name="trend", title=f"Per {filters['period']}",
                      columns=[("Date", "text"), ("Reviews", "int"),
                               *[(label.title(), "percent") for label in labels]],
                      rows=[[row["date"], row["reviews"],
                             *[row["shares"][label] for label in labels]]
                            for row in reversed(trend) if row["reviews"]]),
            ],
        }


def _recommendation_values(row: dict[str, Any]) -> Row:
    return [row["impressions"], row["clicks"], row["ctr"], row["purchases"],
            row["purchase_rate"], row["revenue"]]


def _points(value: float | None) -> str:
    """A difference of proportions in percentage points, signed."""
    return "–" if value is None else f"{value * 100:+.1f} pp"


def _comparison_text(comparison: dict[str, Any] | None) -> dict[str, str]:
    if not comparison:
        return {}
    purchases = comparison["purchase_rate_difference"]
    return {"ctr_a": _format(comparison["ctr_a"], "percent"),
            "ctr_b": _format(comparison["ctr_b"], "percent"),
            "difference": _points(comparison["difference"]),
            "ci_low": _points(comparison["ci_low"]), "ci_high": _points(comparison["ci_high"]),
            "purchase_rate_a": _format(comparison["purchase_rate_a"], "percent"),
            "purchase_rate_b": _format(comparison["purchase_rate_b"], "percent"),
            "purchase_difference": _points(purchases["difference"]),
            "purchase_ci_low": _points(purchases["ci_low"]),
            "purchase_ci_high": _points(purchases["ci_high"])}


RECOMMENDATION_COLUMNS = [("Impressions", "int"), ("Clicked", "int"), ("CTR", "percent"),
                          ("Purchased", "int"), ("Purchase rate", "percent"),
                          ("Attributed revenue", "money")]


class RecommendationsView(DashboardView):
    page, title = "recommendations", "Recommendations"
    template_name = "analytics/recommendations.html"
    input_serializer = apis.RecommendationsApi.InputSerializer

    def empty_state(self) -> str | None:
        if common.has_impressions():
            return None
        return ("No recommendations served yet — client apps call GET "
                "/api/v1/recommendations with their API key; each response is logged as an "
                "impression, and events sent back with its rec_id are attributed to it.")

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        data = recommendations.recommendation_performance(**filters)
        versions = data["by_model_version"]
        strategies = data["by_strategy"]
        return {
            "comparison": data["comparison"],
            "comparison_text": _comparison_text(data["comparison"]),
            "compare_value": ",".join(filters["compare"]) if filters.get("compare") else "",
            "version_names": sorted(recommendations.model_version_names()),
            "cards": [card("Impressions", data["impressions"]),
                      card("CTR", data["ctr"], "percent"),
                      card("Purchase rate", data["purchase_rate"], "percent"),
                      card("Attributed revenue", data["revenue"], "money")],
            "charts": [
                chart(chart_id="ctr-by-version", title="CTR and purchase rate by model version",
                      kind="bar", percent=True,
                      labels=[row["model_version"] or "(no model)" for row in versions],
                      series=[("CTR", [row["ctr"] for row in versions]),
                              ("Purchase rate", [row["purchase_rate"] for row in versions])]),
                chart(chart_id="ctr-by-strategy", title="CTR and purchase rate by strategy",
                      kind="bar", percent=True, labels=[row["strategy"] for row in strategies],
                      series=[("CTR", [row["ctr"] for row in strategies]),
                              ("Purchase rate", [row["purchase_rate"] for row in strategies])]),
            ],
            "tables": [
                table(name="versions", title="By model version",
                      columns=[("Model version", "text"), *RECOMMENDATION_COLUMNS],
                      rows=[[row["model_version"] or "(no model)", *_recommendation_values(row)]
                            for row in versions]),
                table(name="strategies", title="By strategy",
                      columns=[("Strategy", "text"), *RECOMMENDATION_COLUMNS],
                      rows=[[row["strategy"], *_recommendation_values(row)]
                            for row in strategies]),
            ],
        }


class TrendsPageInputSerializer(apis.TrendsApi.InputSerializer):
    """The API's parameters plus how the page draws them."""

    chart = serializers.ChoiceField(choices=["line", "bar"], required=False, default="line")


class TrendsView(DashboardView):
    page, title = "trends", "Trends"
    template_name = "analytics/trends.html"
    input_serializer = TrendsPageInputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        chart_kind = filters.pop("chart")
        data = trends.trends(**filters)
        names = [_series_name(row) for row in data["series"]]
        measure_label = {"count": "Events", "users": "Unique users", "sum": "Sum of value",
                         "average": "Average value"}[data["measure"]]
        number_kind = "int" if data["measure"] in ("count", "users") else "float"
        series = [(name, row["values"]) for name, row in zip(names, data["series"], strict=True)]
        if filters["compare"]:
            series += [(f"{name} (previous period)", row["previous_values"])
                       for name, row in zip(names, data["series"], strict=True)]
        columns = [("Series", "text"), (f"Total ({measure_label.lower()})", number_kind)]
        rows = [[name, row["total"]] for name, row in zip(names, data["series"], strict=True)]
        if filters["compare"]:
            columns += [("Previous period", number_kind), ("Change", "percent")]
            rows = [[*values, row["previous_total"],
                     (row["total"] - row["previous_total"]) / row["previous_total"]
                     if row["previous_total"] else None]
                    for values, row in zip(rows, data["series"], strict=True)]
        period_columns = [("Period", "text"), *[(name, number_kind) for name in names]]
        period_rows = [[period, *[row["values"][index] for row in data["series"]]]
                       for index, period in enumerate(data["periods"])]
        if filters["compare"]:
            # Each period beside its counterpart in the range compared (trends.compared_range).
            period_columns += [("Previous period", "text"),
                               *[(f"{name} (previous period)", number_kind) for name in names]]
            period_rows = [[*values, data["previous_periods"][index],
                            *[row["previous_values"][index] for row in data["series"]]]
                           for index, values in enumerate(period_rows)]
        return {
            "suggestions": trends.filter_suggestions(),
            "cards": [],
            "charts": [chart(chart_id="trend", title=f"{measure_label} per {data['interval']}",
                             kind=chart_kind, labels=data["periods"], series=series,
                             horizontal=False)],
            "tables": [
                table(name="totals", title="Totals", columns=columns, rows=rows),
                table(name="periods", title=f"Per {data['interval']}",
                      columns=period_columns, rows=period_rows),
            ],
        }


def _series_name(row: dict[str, Any]) -> str:
    if row["breakdown_value"] is None:
        return row["event_type"]
    return f"{row['event_type']} · {row['breakdown_value']}"


class PathsView(DashboardView):
    page, title = "paths", "Paths"
    template_name = "analytics/paths.html"
    input_serializer = apis.PathsApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        data = paths.paths(**filters)
        before = data["direction"] == "before"
        anchor = data["event_type"] or ("last event" if before else "first event")
        # The event most persons were at one step on, "other" last (the nodes' order): the
        # largest single link would name one source's next step, not the most reached.
        next_steps = [row for row in data["nodes"] if row["step"] == 1]
        return {
            "suggestions": trends.filter_suggestions(),
            "cards": [card(f"Persons with {anchor}", data["persons"]),
                      card("Most common step " + ("before" if before else "after"),
                           next_steps[0]["event_type"] if next_steps else None, "text")],
            "charts": [_sankey(data)],
            "tables": [
                table(name="steps", title="Steps " + ("before " if before else "after ") + anchor,
                      columns=[("Step", "int"), ("Event", "text"), ("Persons", "int"),
                               ("Went on", "int"), ("Dropped off", "int"),
                               ("Drop-off rate", "percent")],
                      rows=[[row["step"], row["event_type"], row["persons"], row["continued"],
                             row["dropped_off"],
                             common.ratio(row["dropped_off"], row["persons"])
                             if row["dropped_off"] is not None else None]
                            for row in data["nodes"]]),
                table(name="paths", title="Most common paths",
                      columns=[("Path", "text"), ("Persons", "int"), ("Share", "percent")],
                      rows=[[" → ".join(reversed(row["events"]) if before else row["events"]),
                             row["persons"], common.ratio(row["persons"], data["persons"])]
                            for row in data["paths"]]),
            ],
        }


def _sankey(data: dict[str, Any]) -> dict[str, Any]:
    """A Sankey chart spec for static/js/dashboards.js: one node per step and event type.
    Steps before an event flow towards it, so the chart always reads in time order."""
    before = data["direction"] == "before"

    def key(step: int, event_type: str) -> str:
        return f"{step}:{event_type}"

    flows = []
    for row in data["links"]:
        source, target = key(row["step"], row["source"]), key(row["step"] + 1, row["target"])
        if before:
            source, target = target, source
        flows.append({"from": source, "to": target, "flow": row["persons"]})
    return {"id": "paths", "type": "sankey", "title": "Persons from step to step",
            "flows": flows, "labels": {key(row["step"], row["event_type"]): row["event_type"]
                                       for row in data["nodes"]},
            "datasets": [], "horizontal": True}


class LifecycleView(DashboardView):
    page, title = "lifecycle", "Lifecycle"
    template_name = "analytics/lifecycle.html"
    input_serializer = apis.LifecycleApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        data = lifecycle.lifecycle(**filters)
        periods = data["periods"]
        labels = [period["period"] for period in periods]
        return {
            "cards": [card(f"New (last {data['interval']})", periods[-1]["new"]),
                      card("Returning", periods[-1]["returning"]),
                      card("Resurrecting", periods[-1]["resurrecting"]),
                      card("Dormant", -periods[-1]["dormant"])],
            "charts": [chart(
                chart_id="lifecycle", title=f"Persons per {data['interval']} by lifecycle stage",
                kind="bar", labels=labels, stacked=True,
                colors=["#2563eb", "#16a34a", "#f59e0b", "#dc2626"],
                series=[(status.capitalize(), [period[status] for period in periods])
                        for status in lifecycle.STATUSES])],
            "tables": [table(
                name="lifecycle", title=f"Per {data['interval']}",
                columns=[("Period", "text"), ("New", "int"), ("Returning", "int"),
                         ("Resurrecting", "int"), ("Dormant", "int")],
                rows=[[period["period"], *[period[status] for status in lifecycle.STATUSES]]
                      for period in reversed(periods)])],
        }


class StickinessView(DashboardView):
    page, title = "stickiness", "Stickiness"
    template_name = "analytics/stickiness.html"
    input_serializer = apis.StickinessApi.InputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        data = stickiness.stickiness(**filters)
        rows = data["days"]
        return {
            "cards": [card(f"Persons × {data['interval']}s active", data["person_periods"])],
            "charts": [chart(
                chart_id="stickiness",
                title=f"Persons by days active in a {data['interval']}", kind="bar",
                labels=[str(row["days"]) for row in rows],
                series=[("Persons", [row["persons"] for row in rows])])],
            "tables": [table(
                name="stickiness", title=f"Days active per {data['interval']}",
                columns=[("Days active", "int"), ("Persons", "int"), ("Share", "percent")],
                rows=[[row["days"], row["persons"], row["share"]] for row in rows])],
        }


class UserTimelineInputSerializer(serializers.Serializer):
    user_id = serializers.CharField(required=False, allow_blank=True, max_length=255)


class UserTimelineView(DashboardView):
    page, title = "users", "User timeline"
    template_name = "analytics/user_timeline.html"
    input_serializer = UserTimelineInputSerializer

    def build(self, filters: dict[str, Any]) -> dict[str, Any]:
        user_id = (filters.get("user_id") or "").strip()
        timeline = user_timeline.user_timeline(user_id=user_id) if user_id else None
        if timeline is None:
            return {"user_id": user_id, "not_found": bool(user_id), "cards": [], "charts": [],
                    "tables": []}
        per_day: dict[str, int] = {}
        for row in timeline["events"]:
            # Days of the shop's time zone, as every other dashboard counts them.
            day = timezone.localtime(row["timestamp"]).date().isoformat()
            per_day[day] = per_day.get(day, 0) + 1
        days = sorted(per_day)
        recommendations = timeline["recommendations"]
        return {
            "user_id": user_id, "timeline": timeline,
            "cards": [card("Events", timeline["event_count"]),
                      card("Ids (with linked anonymous ones)", len(timeline["ids"])),
                      *[card(f"{label.capitalize()} reviews", count)
                        for label, count in timeline["sentiment"].items()]],
            "charts": [chart(chart_id="user-events", title="Events per day (latest shown)",
                             kind="bar", labels=days,
                             series=[("Events", [per_day[day] for day in days])])],
            "tables": [
                table(name="events", title="Events, newest first",
                      columns=[("Time", "text"), ("Type", "text"), ("Id", "text"),
                               ("Item", "text"), ("Value", "float"), ("Text", "text"),
                               ("Sentiment", "text"), ("Properties", "text")],
                      rows=[[timezone.localtime(row["timestamp"]).isoformat(timespec="seconds"),
                             row["type"], row["user_id"], row["item_title"] or row["item_id"] or "",
                             row["value"], row["text"], row["sentiment_label"],
                             json.dumps(row["properties"], ensure_ascii=False)
                             if row["properties"] else ""]
                            for row in timeline["events"]]),
                table(name="recommendations",
                      title=f"Recommendations now ({recommendations['strategy']}"
                            + (f", {recommendations['model_version']}"
                               if recommendations["model_version"] else "") + ")",
                      columns=[("Item", "text"), ("Title", "text"), ("Category", "text"),
                               ("Score", "float")],
                      rows=[[row["item_id"], row["title"], row["category"], row["score"]]
                            for row in recommendations["items"]],
                      empty="No active items to recommend."),
                table(name="recent-items", title="Recent items behind them, newest first",
                      columns=[("Item", "text")],
                      rows=[[item] for item in timeline["recent_items"]],
                      empty="No item interactions yet: this user gets popular items."),
            ],
        }

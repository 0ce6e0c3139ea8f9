"""Recommendation performance: impressions, clicks and purchases attributed to them,
per model version, with the A/B comparison."""

import math
from typing import Any

from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from analytics.insights.common import Z_95, DateRange, ratio
from ingestion.models import Event
from recommender.models import Impression, ModelVersion


def _recommendation_rows(*, date_range: DateRange, category: str | None,
                         group_by: str) -> list[dict[str, Any]]:
    """Counts impressions per group, then the few events carrying a rec_id (found through
    the partial rec_id index) per group of the impression they name."""
    impressions = Impression.objects.filter(created_at__gte=date_range.start_at,
                                            created_at__lt=date_range.end_before)
    shown = (impressions.values(group_by).annotate(impressions=Count("id"))
             .order_by("-impressions", group_by))
    attributed = Event.objects.filter(rec_id__isnull=False, type__in=("click", "purchase"),
                                      rec_id__in=impressions.values("rec_id"))
    if category:
        attributed = attributed.filter(item__category=category)
    impression_group = Impression.objects.filter(rec_id=OuterRef("rec_id")).values(group_by)
    outcomes = {
        row["group"]: row for row in attributed
        .annotate(group=Subquery(impression_group[:1]))
        .values("group")
        .annotate(clicks=Count("rec_id", distinct=True, filter=Q(type="click")),
                  purchases=Count("rec_id", distinct=True, filter=Q(type="purchase")),
                  revenue=Coalesce(Sum("value", filter=Q(type="purchase")), 0.0))
    }
    rows = []
    for row in shown:
        outcome = outcomes.get(row[group_by], {"clicks": 0, "purchases": 0, "revenue": 0.0})
        rows.append({"impressions": row["impressions"], "clicks": outcome["clicks"],
                     "purchases": outcome["purchases"], "revenue": round(outcome["revenue"], 2),
                     "ctr": ratio(outcome["clicks"], row["impressions"]),
                     "purchase_rate": ratio(outcome["purchases"], row["impressions"]),
                     "key": row[group_by]})
    return rows


def proportion_difference(*, hits_a: int, total_a: int, hits_b: int,
                          total_b: int) -> dict[str, Any]:
    """Rate of A minus rate of B (CTR, purchase rate) with a 95% confidence interval from
    the two-proportion normal approximation (unpooled standard error)."""
    if not total_a or not total_b:
        return {"difference": None, "ci_low": None, "ci_high": None, "significant": None}
    rate_a = hits_a / total_a
    rate_b = hits_b / total_b
    difference = rate_a - rate_b
    standard_error = math.sqrt(rate_a * (1 - rate_a) / total_a
                               + rate_b * (1 - rate_b) / total_b)
    margin = Z_95 * standard_error
    return {"difference": difference, "ci_low": difference - margin,
            "ci_high": difference + margin,
            "significant": bool(standard_error) and abs(difference) > margin}


def recommendation_performance(*, date_range: DateRange, category: str | None = None,
                               compare: tuple[str, str] | None = None) -> dict[str, Any]:
    """Impressions (recommendation responses) in the range, and how many of them led to a
    click or a purchase carrying their rec_id (at any later time), per model version and per
    strategy. CTR = impressions with a click / impressions. With a category only clicks and
    purchases of its items count. `compare` names two model versions; by default the two
    with most impressions are compared."""
    by_version = [{"model_version": row.pop("key"), **row} for row in _recommendation_rows(
        date_range=date_range, category=category, group_by="model_version__name")]
    by_strategy = [{"strategy": row.pop("key"), **row} for row in _recommendation_rows(
        date_range=date_range, category=category, group_by="strategy")]
    versions = {row["model_version"]: row for row in by_version if row["model_version"]}
    if compare is None and len(versions) >= 2:
        compare = tuple(list(versions)[:2])
    comparison = None
    if compare is not None:
        empty = {"impressions": 0, "clicks": 0, "ctr": None, "purchases": 0,
                 "purchase_rate": None}
        row_a, row_b = versions.get(compare[0], empty), versions.get(compare[1], empty)
        comparison = {
            "version_a": compare[0], "version_b": compare[1],
            "ctr_a": row_a["ctr"], "ctr_b": row_b["ctr"],
            "impressions_a": row_a["impressions"], "impressions_b": row_b["impressions"],
            "confidence": 0.95,
            # The CTR difference at the top level; the purchase rate's in its own key.
            **proportion_difference(hits_a=row_a["clicks"], total_a=row_a["impressions"],
                                    hits_b=row_b["clicks"], total_b=row_b["impressions"]),
            "purchase_rate_a": row_a["purchase_rate"], "purchase_rate_b": row_b["purchase_rate"],
            "purchase_rate_difference": proportion_difference(
                hits_a=row_a["purchases"], total_a=row_a["impressions"],
                hits_b=row_b["purchases"], total_b=row_b["impressions"]),
        }
    totals = {key: sum(row[key] for row in by_strategy)
              for key in ("impressions", "clicks", "purchases")}
    return {
        **totals,
        "revenue": round(sum(row["revenue"] for row in by_strategy), 2),
        "ctr": ratio(totals["clicks"], totals["impressions"]),
        "purchase_rate": ratio(totals["purchases"], totals["impressions"]),
        "by_model_version": by_version,
        "by_strategy": by_strategy,
        "comparison": comparison,
    }


def model_version_names() -> set[str]:
    return set(ModelVersion.objects.values_list("name", flat=True))

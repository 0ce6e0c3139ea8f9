"""Items: per-item and per-category performance, and what is trending."""

from dataclasses import dataclass
from typing import Any, Literal

from django.db import connection

from analytics.insights import sources
from analytics.insights.common import (
    RATED_EVENT_TYPES,
    SENTIMENT_LABELS,
    DateRange,
    ratio,
    with_shares,
)
from ingestion.models import Event, IdentityLink, Item


ItemOrder = Literal["views", "revenue", "conversion", "average_rating"]
# The additive per-item totals of _item_rows, in its SELECT order after the item (the
# category and the external id follow them).
_TOTAL_FIELDS = ("events", "views", "previous_views", "purchases", "revenue", "rating_sum",
                 "ratings", *SENTIMENT_LABELS)


def _sql_in(values: tuple[str, ...] | list[Any]) -> str:
    return ", ".join(["%s"] * len(values))


_TOP_ITEMS_ORDER = {
    "views": "views DESC, item",
    "revenue": "COALESCE(revenue, 0) DESC, views DESC, item",
    # No rating sorts last, as _order_key's None does.
    "average_rating": ("CASE WHEN ratings > 0 THEN 0 ELSE 1 END, "
                       "CASE WHEN ratings > 0 THEN rating_sum / ratings END DESC, "
                       "views DESC, item"),
}
# _trending's growth in SQL: a double divided by an integer, as Python divides floats.
_GROWTH = ("CAST(views - previous_views AS DOUBLE PRECISION) "
           "/ CASE WHEN previous_views > 1 THEN previous_views ELSE 1 END")


@dataclass(frozen=True)
class _Wanted:
    """Which rows _item_rows returns: the top `limit` items by `order_by` (every item with
    events, for conversion, which needs their distinct counts first), the per-category
    sums, the `trending_limit` fastest growing items with at least `min_views`."""

    order_by: ItemOrder | None = None
    limit: int = 0
    categories: bool = False
    trending_limit: int = 0
    min_views: int = 0


def _item_rows(*, date_range: DateRange, category: str | None, with_previous: bool,
               wanted: _Wanted) -> dict[str, list[dict[str, Any]]]:
    """One pass over the range's item events, grouped by the integer item key (no join per
    event): per item its category and the additive totals of _TOTAL_FIELDS. `events`,
    `purchases` etc. count the range only; with_previous the scan starts at the previous
    period of equal length and `previous_views` counts its views (else it is 0). The
    database ranks and sums these (one statement, the per-item totals computed once) and
    returns only the rows `wanted`, so a request holds 20-odd rows instead of one per item
    in the catalog (100,000 in the 10M-event benchmark; no faster there: the totals'
    pass dominates). The distinct viewers and purchasers are not additive and come from
    _distinct_users."""
    event_table = connection.ops.quote_name(Event._meta.db_table)
    item_table = connection.ops.quote_name(Item._meta.db_table)
    start = connection.ops.adapt_datetimefield_value(date_range.start_at)
    since = date_range.previous().start_at if with_previous else date_range.start_at
    rated = _sql_in(RATED_EVENT_TYPES)
    current = "e.timestamp >= %s"
    # (SQL, parameters) per total; FILTER works on PostgreSQL and on SQLite >= 3.30.
    totals: list[tuple[str, list[Any]]] = [
        (f"COUNT(*) FILTER (WHERE {current})", [start]),
        (f"COUNT(*) FILTER (WHERE e.type = %s AND {current})", ["view", start]),
        ("COUNT(*) FILTER (WHERE e.type = %s AND e.timestamp < %s)", ["view", start]),
        (f"COUNT(*) FILTER (WHERE e.type = %s AND {current})", ["purchase", start]),
        (f"SUM(e.value) FILTER (WHERE e.type = %s AND {current})", ["purchase", start]),
        (f"SUM(e.value) FILTER (WHERE e.type IN ({rated}) AND {current})",
         [*RATED_EVENT_TYPES, start]),
        (f"COUNT(e.value) FILTER (WHERE e.type IN ({rated}) AND {current})",
         [*RATED_EVENT_TYPES, start]),
        *[(f"COUNT(*) FILTER (WHERE e.sentiment_label = %s AND {current})", [label, start])
          for label in SENTIMENT_LABELS],
    ]
    params: list[Any] = [value for _, values in totals for value in values]
    filters = ["e.item_id IS NOT NULL", "e.timestamp >= %s", "e.timestamp < %s"]
    params += [connection.ops.adapt_datetimefield_value(since),
               connection.ops.adapt_datetimefield_value(date_range.end_before)]
    if category:
        filters.append(f"e.item_id IN (SELECT id FROM {item_table} WHERE category = %s)")
        params.append(category)
    columns = ", ".join(f"{sql} AS {name}" for (sql, _), name in zip(totals, _TOTAL_FIELDS))
    parts = []
    if wanted.order_by == "conversion":
        parts.append("SELECT 'items', per_item.* FROM per_item WHERE events > 0")
    elif wanted.order_by:
        parts.append("SELECT 'items', ranked.* FROM (SELECT * FROM per_item WHERE events > 0 "
                     f"ORDER BY {_TOP_ITEMS_ORDER[wanted.order_by]} LIMIT %s) AS ranked")
        params.append(wanted.limit)
    if wanted.categories:
        sums = ", ".join(f"SUM({field})" for field in _TOTAL_FIELDS)
        parts.append(f"SELECT 'categories', NULL, {sums}, category, NULL FROM per_item "
                     "WHERE events > 0 GROUP BY category")
    if wanted.trending_limit:
        # Ties go by the external id's code points, as Python compares strings: PostgreSQL's
        # default collation would order "sku10" before "sku-2" and "a" before "B".
        code_points = ' COLLATE "C"' if connection.vendor == "postgresql" else ""
        parts.append("SELECT 'trending', ranked.* FROM (SELECT * FROM per_item "
                     "WHERE views + previous_views > 0 AND views >= %s "
                     f"ORDER BY {_GROWTH} DESC, views DESC, external_id{code_points} "
                     "LIMIT %s) AS ranked")
        params += [wanted.min_views, wanted.trending_limit]
    rows: dict[str, list[dict[str, Any]]] = {"items": [], "categories": [], "trending": []}
    if not parts:
        return rows
    sql = (f"WITH per_item AS (SELECT t.*, i.category, i.item_id AS external_id FROM ("
           f"SELECT e.item_id AS item, {columns} FROM {event_table} e "
           f"WHERE {' AND '.join(filters)} GROUP BY e.item_id) t "
           f"JOIN {item_table} i ON i.id = t.item) " + " UNION ALL ".join(parts))
    for kind, item, *sums, category_name, external_id in sources.fetch(sql, params):
        # PostgreSQL sums bigints as numeric: back to the types a single item's totals have.
        row = {field: None if value is None
               else float(value) if field in ("revenue", "rating_sum") else int(value)
               for field, value in zip(_TOTAL_FIELDS, sums)}
        row.update(item=item, category=category_name, external_id=external_id)
        rows[kind].append(row)
    return rows


def _distinct_users(*, date_range: DateRange, category: str | None, by_category: bool,
                    item_pks: list[int] | None = None) -> dict[Any, tuple[int, int]]:
    """Distinct viewers and purchasers in the range per item pk (only of item_pks when
    given) or per category. Reads only view and purchase events (the (type, timestamp)
    index). Per category the events are grouped by the category's integer rank, not its
    name: sorting integers costs less than sorting collated text. Users are counted as
    persons, as in the funnel: an anonymous id linked to a signed-in user is that user.
    Per category, the rollups hold each user's views and purchases of a day (sources.py):
    at 10M events over 120 days that is 2M rows to count over instead of 6M events."""
    if by_category and (shoppers := sources.category_shoppers(date_range=date_range,
                                                              category=category)):
        shoppers_sql, shoppers_params = shoppers
        return {name: (viewers, purchasers) for name, viewers, purchasers in sources.fetch(
            "SELECT category, COUNT(DISTINCT CASE WHEN views > 0 THEN person END), "
            "COUNT(DISTINCT CASE WHEN purchases > 0 THEN person END) "
            f"FROM ({shoppers_sql}) AS shoppers GROUP BY category", shoppers_params)}
    event_table = connection.ops.quote_name(Event._meta.db_table)
    item_table = connection.ops.quote_name(Item._meta.db_table)
    link_join = (f"LEFT JOIN {connection.ops.quote_name(IdentityLink._meta.db_table)} l "
                 "ON l.alias_id = e.user_id")
    params: list[Any] = ["view", "purchase", "view", "purchase",
                         connection.ops.adapt_datetimefield_value(date_range.start_at),
                         connection.ops.adapt_datetimefield_value(date_range.end_before)]
    filters = ["e.type IN (%s, %s)", "e.timestamp >= %s", "e.timestamp < %s",
               "e.item_id IS NOT NULL"]
    if category:
        filters.append(f"e.item_id IN (SELECT id FROM {item_table} WHERE category = %s)")
        params.append(category)
    if item_pks is not None:
        if not item_pks:
            return {}
        filters.append(f"e.item_id IN ({_sql_in(item_pks)})")
        params += item_pks
    person = "COALESCE(l.person_id, e.user_id)"
    counts = (f"COUNT(DISTINCT {person}) FILTER (WHERE e.type = %s) AS viewers, "
              f"COUNT(DISTINCT {person}) FILTER (WHERE e.type = %s) AS purchasers")
    where = " AND ".join(filters)
    if by_category:
        ranks = "DENSE_RANK() OVER (ORDER BY category) AS category_rank"
        sql = (f"SELECT names.category, users.viewers, users.purchasers FROM ("
               f"SELECT r.category_rank, {counts} FROM {event_table} e {link_join} "
               f"JOIN (SELECT id, {ranks} FROM {item_table}) r ON r.id = e.item_id "
               f"WHERE {where} GROUP BY r.category_rank) users "
               f"JOIN (SELECT DISTINCT category, {ranks} FROM {item_table}) names "
               f"ON names.category_rank = users.category_rank")
    else:
        sql = (f"SELECT e.item_id, {counts} FROM {event_table} e {link_join} WHERE {where} "
               "GROUP BY e.item_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


def _performance_row(totals: dict[str, Any], users: tuple[int, int]) -> dict[str, Any]:
    """The aggregated row item_performance and category_performance return, before
    with_shares: unrounded revenue and average rating, as the ordering uses them."""
    viewers, purchasers = users
    reviews = sum(totals[label] or 0 for label in SENTIMENT_LABELS)
    return {
        "views": totals["views"], "viewers": viewers, "purchases": totals["purchases"],
        "purchasers": purchasers, "revenue": totals["revenue"] or 0.0,
        "average_rating": (totals["rating_sum"] / totals["ratings"]
                           if totals["ratings"] else None),
        "reviews": reviews, **{label: totals[label] or 0 for label in SENTIMENT_LABELS},
        "conversion": ratio(purchasers, viewers),
    }


def _order_key(order_by: ItemOrder, totals: dict[str, Any], tie: Any) -> tuple:
    """Descending by order_by (missing values last), then by views, then by `tie`."""
    value = totals[order_by]
    return (value is None, -(value or 0), -totals["views"], tie)


def _top_items(*, rows: list[dict[str, Any]], date_range: DateRange, category: str | None,
               order_by: ItemOrder, limit: int) -> list[dict[str, Any]]:
    current = {row["item"]: row for row in rows}
    users: dict[Any, tuple[int, int]] = {}
    if order_by == "conversion":
        # Conversion needs every item's distinct counts before ranking.
        users = _distinct_users(date_range=date_range, category=category, by_category=False)
    # The other orderings need only the additive totals, so the distinct counts are read
    # for the top rows alone.
    performance = {pk: _performance_row(row, users.get(pk, (0, 0)))
                   for pk, row in current.items()}
    top = sorted(performance, key=lambda pk: _order_key(order_by, performance[pk], pk))[:limit]
    if order_by != "conversion":
        users = _distinct_users(date_range=date_range, category=category, by_category=False,
                                item_pks=top)
        performance = {pk: _performance_row(current[pk], users.get(pk, (0, 0))) for pk in top}
    details = {item.pk: item for item in Item.objects.filter(pk__in=top)
               .only("item_id", "title", "category")}
    return [with_shares({**performance[pk], "item_id": details[pk].item_id,
                          "title": details[pk].title, "category": details[pk].category})
            for pk in top]


def _top_categories(*, rows: list[dict[str, Any]], date_range: DateRange,
                    category: str | None, order_by: ItemOrder, limit: int
                    ) -> list[dict[str, Any]]:
    """Category totals are sums of their items' totals; distinct users are counted per
    category (a user viewing two items of a category counts once)."""
    users = _distinct_users(date_range=date_range, category=category, by_category=True)
    performance = {row["category"]: _performance_row(row, users.get(row["category"], (0, 0)))
                   for row in rows}
    top = sorted(performance,
                 key=lambda name: _order_key(order_by, performance[name], name))[:limit]
    return [with_shares({"category": name, **performance[name]}) for name in top]


def _trending(*, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Growth is (current - previous) / previous views, or the current count when there
    were none before; ties on growth and views are broken by the external item id."""
    details = {item.pk: item for item in Item.objects.filter(pk__in=[row["item"] for row in rows])
               .only("item_id", "title", "category")}
    ranked = sorted(
        ((float(row["views"] - row["previous_views"]) / float(max(row["previous_views"], 1)),
          row, details[row["item"]]) for row in rows),
        key=lambda ranking: (-ranking[0], -ranking[1]["views"], ranking[2].item_id))
    return [{"item_id": item.item_id, "title": item.title, "category": item.category,
             "current_views": row["views"], "previous_views": row["previous_views"],
             "growth": round(growth, 4)} for growth, row, item in ranked]


def item_report(*, date_range: DateRange, category: str | None = None,
                order_by: ItemOrder = "views", limit: int = 20, trending_limit: int = 10,
                min_views: int = 3) -> dict[str, list[dict[str, Any]]]:
    """item_performance, category_performance and trending_items from one shared pass
    over the events of the range and the previous period (plus the distinct-user counts)."""
    rows = _item_rows(date_range=date_range, category=category, with_previous=True,
                      wanted=_Wanted(order_by=order_by, limit=limit, categories=True,
                                     trending_limit=trending_limit, min_views=min_views))
    scope = {"date_range": date_range, "category": category, "order_by": order_by,
             "limit": limit}
    return {"items": _top_items(rows=rows["items"], **scope),
            "categories": _top_categories(rows=rows["categories"], **scope),
            "trending": _trending(rows=rows["trending"])}


def item_performance(*, date_range: DateRange, category: str | None = None,
                     order_by: ItemOrder = "views", limit: int = 20) -> list[dict[str, Any]]:
    """Top items: views, unique viewers, purchases, conversion (purchasers / viewers),
    revenue, average rating and review sentiment shares."""
    rows = _item_rows(date_range=date_range, category=category, with_previous=False,
                      wanted=_Wanted(order_by=order_by, limit=limit))
    return _top_items(rows=rows["items"], date_range=date_range, category=category,
                      order_by=order_by, limit=limit)


def category_performance(*, date_range: DateRange, category: str | None = None,
                         order_by: ItemOrder = "views", limit: int = 20) -> list[dict[str, Any]]:
    rows = _item_rows(date_range=date_range, category=category, with_previous=False,
                      wanted=_Wanted(categories=True))
    return _top_categories(rows=rows["categories"], date_range=date_range, category=category,
                           order_by=order_by, limit=limit)


def trending_items(*, date_range: DateRange, category: str | None = None, limit: int = 10,
                   min_views: int = 3) -> list[dict[str, Any]]:
    """Items whose views grew most against the previous period of equal length; growth is
    (current - previous) / previous, or the current count when there were no views before."""
    rows = _item_rows(date_range=date_range, category=category, with_previous=True,
                      wanted=_Wanted(trending_limit=limit, min_views=min_views))
    return _trending(rows=rows["trending"])

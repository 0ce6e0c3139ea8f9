"""Items: per-item and per-category performance, and what is trending."""

from dataclasses import dataclass
from typing import Any, Literal

from django.db import connection
from django.db.models import Model

from analytics.insights import sources
from analytics.insights.common import (
    RATED_EVENT_TYPES,
    SENTIMENT_LABELS,
    DateRange,
    ratio,
    with_shares,
)
from analytics.insights.sources import Relation
from ingestion.models import Event, IdentityLink, Item


ItemOrder = Literal["views", "revenue", "conversion", "average_rating"]
# The additive per-item totals of _item_rows, in its SELECT order after the item (the
# category and the external id follow them).
_TOTAL_FIELDS = ("events", "views", "previous_views", "purchases", "revenue", "rating_sum",
                 "ratings", *SENTIMENT_LABELS)


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _sql_in(values: tuple[str, ...] | list[Any]) -> str:
    return ", ".join(["%s"] * len(values))


# _order_key in SQL, over per_item (and, for conversion, the items' distinct users).
_TOP_ITEMS_ORDER = {
    "views": "per_item.views DESC, per_item.item",
    "revenue": "COALESCE(per_item.revenue, 0) DESC, per_item.views DESC, per_item.item",
    # No rating sorts last, as _order_key's None does.
    "average_rating": ("CASE WHEN per_item.ratings > 0 THEN 0 ELSE 1 END, "
                       "CASE WHEN per_item.ratings > 0 "
                       "THEN per_item.rating_sum / per_item.ratings END DESC, "
                       "per_item.views DESC, per_item.item"),
    # No viewer sorts last; a double divided by an integer, as ratio divides.
    "conversion": ("CASE WHEN users.viewers > 0 THEN 0 ELSE 1 END, "
                   "CAST(users.purchasers AS DOUBLE PRECISION) / NULLIF(users.viewers, 0) DESC, "
                   "per_item.views DESC, per_item.item"),
}
# _trending's growth in SQL: a double divided by an integer, as Python divides floats.
_GROWTH = ("CAST(views - previous_views AS DOUBLE PRECISION) "
           "/ CASE WHEN previous_views > 1 THEN previous_views ELSE 1 END")


@dataclass(frozen=True)
class _Wanted:
    """Which rows _item_rows returns: the top `limit` items by `order_by`, the per-category
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
    in the catalog (100,000 in the 10M-event benchmark). The distinct viewers and
    purchasers are not additive: they come from _users_per_item, for the top rows alone,
    but for conversion, which ranks every item by them here."""
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
        filters.append(f"e.item_id IN (SELECT id FROM {_table(Item)} WHERE category = %s)")
        params.append(category)
    columns = ", ".join(f"{sql} AS {name}" for (sql, _), name in zip(totals, _TOTAL_FIELDS))
    parts = []
    if wanted.order_by:
        ranked_from = "per_item"
        if wanted.order_by == "conversion":
            # Ranked in the database, as the other orderings are: every item's distinct
            # users are counted either way, and only `limit` rows come back instead of one
            # per item with events (10M events: 100,000 rows read into Python, about a
            # second of the page; benchmarks/README.md, session 22).
            users_sql, users_params = _item_users(date_range=date_range, category=category)
            ranked_from += f" LEFT JOIN ({users_sql}) AS users ON users.item = per_item.item"
            params += users_params
        parts.append(f"SELECT 'items', ranked.* FROM (SELECT per_item.* FROM {ranked_from} "
                     f"WHERE per_item.events > 0 ORDER BY {_TOP_ITEMS_ORDER[wanted.order_by]} "
                     "LIMIT %s) AS ranked")
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
           f"SELECT e.item_id AS item, {columns} FROM {_table(Event)} e "
           f"WHERE {' AND '.join(filters)} GROUP BY e.item_id) t "
           f"JOIN {_table(Item)} i ON i.id = t.item) " + " UNION ALL ".join(parts))
    for kind, item, *sums, category_name, external_id in sources.fetch(sql, params):
        # PostgreSQL sums bigints as numeric: back to the types a single item's totals have.
        row = {field: None if value is None
               else float(value) if field in ("revenue", "rating_sum") else int(value)
               for field, value in zip(_TOTAL_FIELDS, sums)}
        row.update(item=item, category=category_name, external_id=external_id)
        rows[kind].append(row)
    return rows


def _view_and_purchase_events(*, date_range: DateRange, category: str | None
                              ) -> tuple[str, str, list[Any]]:
    """(FROM, WHERE, parameters) of the range's view and purchase events of items (of the
    category) as `e`, joined to their user's identity link as `l` (for _PERSON): covered
    by the (type, timestamp) index."""
    params: list[Any] = [connection.ops.adapt_datetimefield_value(date_range.start_at),
                         connection.ops.adapt_datetimefield_value(date_range.end_before)]
    filters = ["e.type IN ('view', 'purchase')", "e.timestamp >= %s", "e.timestamp < %s",
               "e.item_id IS NOT NULL"]
    if category:
        filters.append(f"e.item_id IN (SELECT id FROM {_table(Item)} WHERE category = %s)")
        params.append(category)
    from_sql = f"{_table(Event)} e LEFT JOIN {_table(IdentityLink)} l ON l.alias_id = e.user_id"
    return from_sql, " AND ".join(filters), params


# Users are counted as persons, as in the funnel: an anonymous id linked to a signed-in
# user is that user.
_PERSON = "COALESCE(l.person_id, e.user_id)"
_COUNTS = (f"COUNT(DISTINCT {_PERSON}) FILTER (WHERE e.type = 'view') AS viewers, "
           f"COUNT(DISTINCT {_PERSON}) FILTER (WHERE e.type = 'purchase') AS purchasers")


def _item_users(*, date_range: DateRange, category: str | None,
                item_pks: list[int] | None = None) -> Relation:
    """SQL with columns (item, viewers, purchasers): distinct viewers and purchasers in the
    range per item pk (of item_pks when given, which must not be empty)."""
    from_sql, where, params = _view_and_purchase_events(date_range=date_range,
                                                        category=category)
    if item_pks is not None:
        where += f" AND e.item_id IN ({_sql_in(item_pks)})"
        params += item_pks
    return (f"SELECT e.item_id AS item, {_COUNTS} FROM {from_sql} WHERE {where} "
            "GROUP BY e.item_id", params)


def _users_per_item(*, date_range: DateRange, category: str | None,
                    item_pks: list[int]) -> dict[int, tuple[int, int]]:
    """Distinct viewers and purchasers in the range of the items item_pks, per item pk."""
    if not item_pks:
        return {}
    sql, params = _item_users(date_range=date_range, category=category, item_pks=item_pks)
    return {item: (viewers, purchasers)
            for item, viewers, purchasers in sources.fetch(sql, params)}


def _users_per_category(*, date_range: DateRange, category: str | None
                        ) -> dict[str, tuple[int, int]]:
    """Distinct viewers and purchasers in the range per category. The rollups hold each
    user's views and purchases of a day (sources.py): at 10M events over 120 days that is
    2M rows to count over instead of 6M events. From raw events, they are grouped by the
    category's integer rank, not its name: sorting integers costs less than sorting
    collated text."""
    if shoppers := sources.category_shoppers(date_range=date_range, category=category):
        shoppers_sql, shoppers_params = shoppers
        return {name: (viewers, purchasers) for name, viewers, purchasers in sources.fetch(
            "SELECT category, COUNT(DISTINCT CASE WHEN views > 0 THEN person END), "
            "COUNT(DISTINCT CASE WHEN purchases > 0 THEN person END) "
            f"FROM ({shoppers_sql}) AS shoppers GROUP BY category", shoppers_params)}
    from_sql, where, params = _view_and_purchase_events(date_range=date_range,
                                                        category=category)
    ranks = "DENSE_RANK() OVER (ORDER BY category) AS category_rank"
    sql = (f"SELECT names.category, users.viewers, users.purchasers FROM ("
           f"SELECT r.category_rank, {_COUNTS} FROM {from_sql} "
           f"JOIN (SELECT id, {ranks} FROM {_table(Item)}) r ON r.id = e.item_id "
           f"WHERE {where} GROUP BY r.category_rank) users "
           f"JOIN (SELECT DISTINCT category, {ranks} FROM {_table(Item)}) names "
           f"ON names.category_rank = users.category_rank")
    return {name: (viewers, purchasers)
            for name, viewers, purchasers in sources.fetch(sql, params)}


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
    """`rows`: the top `limit` items by order_by (_item_rows ranks them), in any order."""
    users = _users_per_item(date_range=date_range, category=category,
                            item_pks=[row["item"] for row in rows])
    performance = {row["item"]: _performance_row(row, users.get(row["item"], (0, 0)))
                   for row in rows}
    top = sorted(performance, key=lambda pk: _order_key(order_by, performance[pk], pk))[:limit]
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
    users = _users_per_category(date_range=date_range, category=category)
    performance = {row["category"]: _performance_row(row, users.get(row["category"], (0, 0)))
                   for row in rows}
    top = sorted(performance,
                 key=lambda name: _order_key(order_by, performance[name], name))[:limit]
    return [with_shares({"category": name, **performance[name]}) for name in top]


def _trending(*, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Growth is (current - previous) / previous views; items without views before have
    none (a ratio of nothing: shown as new), ranked as if it were their view count. Ties on
    growth and views are broken by the external item id."""
    details = {item.pk: item for item in Item.objects.filter(pk__in=[row["item"] for row in rows])
               .only("item_id", "title", "category")}
    ranked = sorted(
        ((float(row["views"] - row["previous_views"]) / float(max(row["previous_views"], 1)),
          row, details[row["item"]]) for row in rows),
        key=lambda ranking: (-ranking[0], -ranking[1]["views"], ranking[2].item_id))
    return [{"item_id": item.item_id, "title": item.title, "category": item.category,
             "current_views": row["views"], "previous_views": row["previous_views"],
             "growth": round(growth, 4) if row["previous_views"] else None}
            for growth, row, item in ranked]


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
    (current - previous) / previous, None without views before (ranked by their count)."""
    rows = _item_rows(date_range=date_range, category=category, with_previous=True,
                      wanted=_Wanted(trending_limit=limit, min_views=min_views))
    return _trending(rows=rows["trending"])

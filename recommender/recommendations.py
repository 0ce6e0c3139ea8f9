"""Answering "what should this user see next?" and "what is like this item?".

The query tower runs on the user's history as stored right now, so a click changes the
next answer without retraining. Every answer is logged as an Impression whose rec_id
client apps send back with clicks and purchases for attribution.
"""

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max
from django.utils import timezone

from config.db import fetch_prepared
from ingestion.models import Item
from ingestion.selectors import Person, person_of
from recommender import selectors
from recommender.models import Impression, ModelKind, ModelVersion
from recommender.serving import LoadedVersion, serving_version

POPULAR_CACHE_SECONDS = 60.0
# Latest interactions read per request: the model's history and what is left out of the
# answer; interacted_items reads the rest where there are more.
RECENT_INTERACTIONS = 500
# Persons whose every interacted item a process keeps (_interacted_before): at 10M events
# reading them took 6-118 ms for persons of 1,600-22,000 events.
INTERACTED_CACHE_PERSONS = 1_000
POPULAR_CACHE_CATEGORIES = 1_000
# Items added since the model was trained that its view embeds (the newest): a catalog
# with more is overdue a retrain, and embedding them all would slow each view's build.
MAX_NEW_ITEMS = 20_000

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recommendation:
    rec_id: uuid.UUID
    items: list[dict]
    model_version: str | None
    strategy: str


@dataclass
class _CatalogView:
    """The model a version serves with, and the category and availability of each of its
    item rows. The model is the version's with the active items added to the catalog
    since it was trained (TwoTowerModel.with_catalog): without them a product launched
    today reached no one with a history until a retrain was promoted."""

    model: Any  # recommender.ml.two_tower.TwoTowerModel
    categories: np.ndarray  # int32 code per row, into category_codes
    category_codes: dict[str, int]
    unavailable: np.ndarray
    # Every stored item's id by primary key, so a user's history is read without a join.
    item_id_by_pk: dict[int, str]
    fingerprint: tuple


@dataclass
class _Caches:
    catalogs: dict[int, _CatalogView] = field(default_factory=dict)
    # By category (None: the whole catalog): (read at, items).
    popular: dict[str | None, tuple[float, list]] = field(default_factory=dict)
    fingerprint: tuple[float, tuple] = (float("-inf"), ())
    # Per person with more interactions than a request reads, by their id and user rows:
    # (read at, every item).
    interacted: dict[tuple[str, tuple[int, ...]], tuple[float, frozenset[str]]] = field(
        default_factory=dict)
    # By version (a lock per version a process ever served: a few): held by the thread
    # rebuilding its catalog view.
    building: dict[int, threading.Lock] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_caches = _Caches()


def _catalog_fingerprint() -> tuple:
    """Changes whenever an item is added or edited; read at most every refresh interval."""
    checked_at, value = _caches.fingerprint
    if time.monotonic() - checked_at >= settings.MODEL_REFRESH_SECONDS:
        stats = Item.objects.aggregate(n=Count("id"), changed=Max("updated_at"))
        value = (stats["n"], stats["changed"])
        _caches.fingerprint = (time.monotonic(), value)
    return value


def _catalog_view(loaded: LoadedVersion) -> _CatalogView:
    caches = _caches
    view = caches.catalogs.get(loaded.version_id)
    if view is not None and view.fingerprint == _catalog_fingerprint():
        return view
    with caches.lock:
        building = caches.building.setdefault(loaded.version_id, threading.Lock())
    # One thread per process rebuilds a version's view (every item read, new items
    # embedded: seconds for a large catalog); the others answer from the view it replaces,
    # whose item categories and availability the answer's final statement checks again.
    if not building.acquire(blocking=view is None):
        return view
    try:
        view = caches.catalogs.get(loaded.version_id)
        fingerprint = _catalog_fingerprint()
        if view is not None and view.fingerprint == fingerprint:
            return view
        view = _build_catalog_view(loaded, fingerprint)
        with caches.lock:
            # Views of the active and the A/B candidate version, plus one just swapped out.
            recent = dict(list(caches.catalogs.items())[-2:])
            caches.catalogs = {**recent, loaded.version_id: view}
        return view
    finally:
        building.release()


def _build_catalog_view(loaded: LoadedVersion, fingerprint: tuple) -> _CatalogView:
    stored: dict[str, tuple[str, bool]] = {}
    item_id_by_pk: dict[int, str] = {}
    new_pks = []
    for pk, item_id, category, active in Item.objects.values_list(
            "pk", "item_id", "category", "is_active").iterator(chunk_size=20_000):
        stored[item_id] = (category, active)
        item_id_by_pk[pk] = item_id
        if active and item_id not in loaded.model.row_by_item:
            new_pks.append(pk)
    if len(new_pks) > MAX_NEW_ITEMS:
        logger.warning("%d items are new to %s: the newest %d are recommended until a "
                       "retrain", len(new_pks), loaded.name, MAX_NEW_ITEMS)
        new_pks = sorted(new_pks)[-MAX_NEW_ITEMS:]
    model = loaded.model.with_catalog(pd.DataFrame(
        list(Item.objects.filter(pk__in=new_pks).order_by("pk")
             .values_list("item_id", "category", "title")),
        columns=["item_id", "category", "title"])) if new_pks else loaded.model
    ids = model.item_ids.tolist()
    category_codes: dict[str, int] = {}
    # Integer codes, so a category filter is one vectorised comparison per request.
    categories = np.fromiter((category_codes.setdefault(stored.get(i, ("", False))[0],
                                                        len(category_codes)) for i in ids),
                             dtype=np.int32, count=len(ids))
    unavailable = np.fromiter((not stored.get(i, ("", False))[1] for i in ids), dtype=bool,
                              count=len(ids))
    return _CatalogView(model=model, categories=categories, category_codes=category_codes,
                        unavailable=unavailable, item_id_by_pk=item_id_by_pk,
                        fingerprint=fingerprint)


def _popular(category: str | None = None) -> list[tuple[str, str, float]]:
    """The shop's popular items, or a category's: the catalog-wide list's top 500 holds
    few or none of a small category's items. A category no item has is not looked up
    (nor cached: clients may ask for any name)."""
    fetched_at, items = _caches.popular.get(category, (float("-inf"), []))
    if time.monotonic() - fetched_at >= POPULAR_CACHE_SECONDS:
        if category is not None and not Item.objects.filter(category=category).exists():
            return []
        items = selectors.popular_items(category=category)
        _remember(_caches.popular, category, items, keep=POPULAR_CACHE_CATEGORIES)
    return items


def _remember(cache: dict, key, value, *, keep: int) -> None:
    """Stores (now, value) under key, the entry kept longest going once `keep` are held."""
    with _caches.lock:
        cache.pop(key, None)
        if len(cache) >= keep:
            cache.pop(next(iter(cache)))
        cache[key] = (time.monotonic(), value)


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best finite scores, best first (excluded rows are -inf). One
    argpartition over the whole vector, not negated: no full-length copy per request."""
    if k >= len(scores):
        top = np.argsort(-scores, kind="stable")
    else:
        top = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
        top = top[np.argsort(-scores[top], kind="stable")]
    return top[np.isfinite(scores[top])]


def _still_active(item_ids: list[str]) -> dict[str, dict]:
    """Title and category of the items that are active right now (a deactivation since
    the catalog view was built must still never be served)."""
    if not item_ids:
        return {}
    # Plain SQL: this runs on every request (see selectors.recent_interactions).
    quote = connection.ops.quote_name
    sql = (f"SELECT {quote('item_id')}, {quote('title')}, {quote('category')} "
           f"FROM {quote(Item._meta.db_table)} WHERE {quote('is_active')} = %s AND "
           f"{quote('item_id')} IN ({', '.join(['%s'] * len(item_ids))})")
    with connection.cursor() as cursor:
        cursor.execute(sql, [True, *item_ids])
        return {item: {"item_id": item, "title": title, "category": category}
                for item, title, category in cursor.fetchall()}


def _answer(*, user_id: str, ranked: list[tuple[str, float]], k: int,
            loaded: LoadedVersion | None, strategy: str, endpoint: str,
            category: str | None = None, log_impression: bool = True) -> Recommendation:
    """The first k of `ranked` still active (and still of `category`, where one is asked
    for: the catalog view's categories may be seconds old), with the impression logged."""
    impression = Impression(user_id=user_id, model_version_id=loaded.version_id if loaded
                            else None, strategy=strategy, endpoint=endpoint,
                            created_at=timezone.now())
    scores = dict(ranked)
    if log_impression and connection.vendor == "postgresql":
        # One round trip: the still-active check of the final candidates and the
        # impression insert in one statement (this runs on every request).
        chosen = _choose_and_log(impression, [item for item, _ in ranked], k, category)
    else:
        details = _still_active([item for item, _ in ranked])
        chosen = [(item, details[item]["title"], details[item]["category"])
                  for item, _ in ranked if item in details
                  and category in (None, details[item]["category"])][:k]
        if log_impression:
            impression.item_ids = [item for item, _, _ in chosen]
            _log_impression(impression)
    items = [{"item_id": item, "score": round(float(scores[item]), 6), "title": title,
              "category": category} for item, title, category in chosen]
    return Recommendation(rec_id=impression.rec_id, items=items,
                          model_version=loaded.name if loaded else None, strategy=strategy)


def _choose_and_log(impression: Impression, candidates: list[str], k: int,
                    category: str | None) -> list[tuple[str, str, str]]:
    """PostgreSQL: (item_id, title, category) of the first k candidates active (and of
    `category`, if given) right now, in candidate order, and the impression of exactly
    those, in one prepared statement.
    In autocommit mode the statement also turns off ``synchronous_commit`` for its own
    implicit transaction, so the impression is committed without waiting for its WAL flush
    (see _log_impression)."""
    quote = connection.ops.quote_name
    names = ("rec_id", "user_id", "model_version", "strategy", "endpoint", "created_at")
    fields = [Impression._meta.get_field(name) for name in names]
    casts = ("uuid", "varchar", "bigint", "varchar", "varchar", "timestamptz")
    columns = [quote(Impression._meta.get_field("item_ids").column),
               *(quote(f.column) for f in fields)]
    values = ", ".join(_existing_version_sql(f"%s::{cast}") if name == "model_version"
                       else f"%s::{cast}" for name, cast in zip(names, casts, strict=True))
    # Inside the caller's transaction its durability is the caller's to choose. Otherwise
    # set_config(..., true) lasts until this statement's implicit transaction commits; HAVING
    # evaluates it exactly once (the aggregate has one row, even with nothing chosen).
    async_commit = ("" if connection.in_atomic_block else
                    " HAVING set_config('synchronous_commit', 'off', true) = 'off'")
    statement = (
        f"WITH chosen AS (SELECT i.{quote('item_id')} AS item_id, i.{quote('title')} AS title, "
        f"i.{quote('category')} AS category, r.ord AS ord "
        f"FROM unnest(%s::varchar[]) WITH ORDINALITY AS r(item_id, ord) "
        f"JOIN {quote(Item._meta.db_table)} i ON i.{quote('item_id')} = r.item_id "
        f"WHERE i.{quote('is_active')} AND (%s::varchar IS NULL "
        f"OR i.{quote('category')} = %s::varchar) ORDER BY r.ord LIMIT %s), "
        f"logged AS (INSERT INTO {quote(Impression._meta.db_table)} ({', '.join(columns)}) "
        f"SELECT COALESCE(jsonb_agg(item_id ORDER BY ord), '[]'::jsonb), {values} "
        f"FROM chosen{async_commit}) "
        f"SELECT item_id, title, category FROM chosen ORDER BY ord")
    params = [candidates, category, category, k,
              *(f.get_db_prep_save(getattr(impression, f.attname), connection) for f in fields)]
    rows = fetch_prepared(statement, params)
    impression.item_ids = [item for item, _, _ in rows]
    return rows


def _existing_version_sql(placeholder: str) -> str:
    """The impression's version where it still exists, else NULL: a process answers from a
    version until it has loaded the next, and an admin may delete a retired version before
    then (every answer's insert then broke its foreign key: a 500 per request)."""
    quote = connection.ops.quote_name
    return (f"(SELECT {quote('id')} FROM {quote(ModelVersion._meta.db_table)} "
            f"WHERE {quote('id')} = {placeholder})")


def _log_impression(impression: Impression) -> Impression:
    """Stores the impression with a plain INSERT (no model save machinery: it runs on every
    request). PostgreSQL uses _choose_and_log instead, which also skips the WAL flush wait:
    a crash may lose the last few impressions (attribution data, never the shop's events),
    and the answer does not pay a disk flush per request."""
    names = ("rec_id", "user_id", "item_ids", "model_version", "strategy", "endpoint",
             "created_at")
    fields = [Impression._meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    values = ", ".join(_existing_version_sql("%s") if name == "model_version" else "%s"
                       for name in names)
    sql = (f"INSERT INTO {quote(Impression._meta.db_table)} "
           f"({', '.join(quote(f.column) for f in fields)}) VALUES ({values})")
    params = [f.get_db_prep_save(getattr(impression, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    return impression


def recommend_for_user(*, user_id: str, k: int = 10, category: str | None = None,
                       exclude: frozenset[str] = frozenset(),
                       exclude_interacted: bool = True,
                       log_impression: bool = True) -> Recommendation:
    """Two-tower over the user's current history; popular items for a user without one
    (or while no model is trained). Inactive items never appear. Without
    ``log_impression`` (a product manager looking at what a user would get) no impression
    is stored, so the look is not counted as the user having been shown anything."""
    person = person_of(user_id=user_id)
    # An A/B split is sticky per person: an anonymous id linked to a signed-in user gets
    # the version the user gets.
    loaded = serving_version(kind=ModelKind.RECOMMENDER,
                             user_id=person.user_id if person else user_id)
    history_length = loaded.model.config.history_length if loaded else 0
    view = _catalog_view(loaded) if loaded else None
    read_at_most = max(history_length, RECENT_INTERACTIONS)
    recent = selectors.recent_interactions(
        person=person, limit=read_at_most, item_ids_by_pk=view.item_id_by_pk if view else None)
    excluded = set(exclude)
    if exclude_interacted:
        # A history cut at the limit may leave out an item bought long ago: a second query,
        # for the few users with that many interactions.
        excluded |= set(recent)
        if len(recent) >= read_at_most:
            excluded |= _interacted_before(person)
    margin = k + 20  # room for items deactivated since the catalog view was built
    if loaded is None or not recent:
        ranked = [(item, score) for item, _, score in _popular(category)
                  if item not in excluded]
        return _answer(user_id=user_id, ranked=ranked[:margin], k=k, loaded=None,
                       strategy="popular", endpoint="recommendations", category=category,
                       log_impression=log_impression)

    model = view.model
    scores = model.score_items(model.query_embeddings(
        [person.user_id], [recent[-history_length:]], [person.traits]))[0]
    scores[view.unavailable] = -np.inf
    if category is not None:
        scores[view.categories != view.category_codes.get(category, -1)] = -np.inf
    rows = [model.row_by_item[item] for item in excluded if item in model.row_by_item]
    scores[rows] = -np.inf
    top = _top_rows(scores, margin)
    ranked = [(str(model.item_ids[row]), float(scores[row])) for row in top]
    return _answer(user_id=user_id, ranked=ranked, k=k, loaded=loaded, strategy="two_tower",
                   endpoint="recommendations", category=category,
                   log_impression=log_impression)


class UnknownItem(Exception):
    pass


def similar_to_item(*, item_id: str, k: int = 10) -> Recommendation:
    """Nearest items in the candidate tower's space (an item added since the model was
    trained is placed there by its category and title); items of the same category by
    popularity while no model is trained, or for an item neither the model nor its view
    holds (inactive, or past MAX_NEW_ITEMS)."""
    category = Item.objects.filter(item_id=item_id).values_list("category", flat=True).first()
    if category is None:
        raise UnknownItem(item_id)
    loaded = serving_version(kind=ModelKind.RECOMMENDER)
    margin = k + 20
    if loaded is not None:
        view = _catalog_view(loaded)
        row = view.model.row_by_item.get(item_id)
        if row is not None:
            embeddings = view.model.item_embeddings
            scores = embeddings @ embeddings[row]
            scores[row] = -np.inf
            scores[view.unavailable] = -np.inf
            top = _top_rows(scores, margin)
            ranked = [(str(view.model.item_ids[r]), float(scores[r])) for r in top]
            return _answer(user_id="", ranked=ranked, k=k, loaded=loaded, strategy="two_tower",
                           endpoint="similar")
    ranked = [(item, score) for item, _, score in _popular(category) if item != item_id]
    return _answer(user_id="", ranked=ranked[:margin], k=k, loaded=None, strategy="popular",
                   endpoint="similar", category=category)


def _interacted_before(person: Person) -> frozenset[str]:
    """Every item the person interacted with, read again once POPULAR_CACHE_SECONDS have
    passed (what came since is in the recent interactions each request reads) or once
    another id is linked to the person (its older items are not)."""
    now = time.monotonic()
    key = (person.user_id, person.user_pks)
    read_at, items = _caches.interacted.get(key, (float("-inf"), frozenset()))
    if now - read_at >= POPULAR_CACHE_SECONDS:
        items = frozenset(selectors.interacted_items(person=person))
        _remember(_caches.interacted, key, items, keep=INTERACTED_CACHE_PERSONS)
    return items


def reset_caches() -> None:
    """Forget cached catalog views, popular items and persons' interacted items (tests, and
    after bulk imports)."""
    global _caches
    _caches = _Caches()

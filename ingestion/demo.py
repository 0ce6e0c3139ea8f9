"""A deterministic demo shop for `seed_demo`: a catalog, users and their events.

The data is made to behave like a young online shop, so every dashboard and model has
something real to show:
- items in eight categories, each category a browsing sequence (item k leads to item k+1),
  so next-item prediction has signal;
- users with a few preferred categories and a personal taste over items; what they view,
  click, put in the cart and buy follows that taste, with drop-off at each funnel step;
- new users arriving over the whole window (more towards its end, as in a growing shop) and
  returning less week after week;
- ratings and reviews after purchases, about 85% positive, with review texts whose
  sentiment follows the rating;
- `signup` and `search` custom events, and plan/country traits on most users;
- the recommender at work: an A/B test of two recommender versions (users split 50/50,
  sticky), a recommendations widget shown on a share of visits, each showing logged as an
  impression with a rec_id, and clicks, carts and purchases of recommended items carrying
  that rec_id. The newer version ranks by each user's taste, the older one mostly by
  popularity, so the newer one earns measurably more clicks and purchases.

Everything depends only on (users, items, days, seed, end): scalar draws come from
`random.Random(seed)` and arrays from `numpy.random.default_rng(seed)`, in a fixed order.
"""

import random
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate, product

import numpy as np
from django.db import transaction

from ingestion.services import EventInput, store_events, upsert_items, upsert_users

DEMO_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lodestar:demo")
SECONDS_PER_DAY = 86_400
STORE_BATCH_SIZE = 5000


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    # What reviews talk about.
    aspects: tuple[str, ...]
    price_range: tuple[float, float]
    tags: tuple[str, ...]
    # Categories a shopper often moves on to from this one.
    related: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("Coffee & Tea", ("Espresso Beans", "Pour-Over Kettle", "Matcha Kit",
                              "Cold Brew Bottle", "French Press", "Tea Sampler", "Burr Grinder",
                              "Travel Mug"),
             ("flavour", "aroma", "freshness", "packaging"), (9, 90),
             ("coffee", "tea", "organic", "gift"), ("Kitchen", "Home & Living")),
    Category("Kitchen", ("Chef's Knife", "Cast Iron Skillet", "Cutting Board", "Spice Rack",
                         "Mixing Bowls", "Olive Oil Set", "Dutch Oven", "Knife Sharpener"),
             ("build quality", "sharpness", "grip", "finish"), (15, 180),
             ("cooking", "kitchen", "gift", "durable"), ("Coffee & Tea", "Home & Living")),
    Category("Home & Living", ("Linen Throw", "Scented Candle", "Ceramic Vase", "Wool Rug",
                               "Table Lamp", "Plant Pot", "Wall Print", "Cushion Cover"),
             ("colour", "texture", "size", "scent"), (12, 220),
             ("home", "decor", "cozy", "handmade"), ("Kitchen", "Personal Care")),
    Category("Outdoor", ("Trail Backpack", "Camping Mug", "Headlamp", "Rain Jacket",
                         "Hiking Socks", "Water Filter", "Hammock", "Trekking Poles"),
             ("durability", "weight", "fit", "waterproofing"), (14, 240),
             ("outdoor", "hiking", "camping", "lightweight"), ("Fitness", "Tech Accessories")),
    Category("Fitness", ("Yoga Mat", "Resistance Bands", "Water Bottle", "Foam Roller",
                         "Jump Rope", "Kettlebell", "Gym Towel", "Running Belt"),
             ("grip", "comfort", "durability", "size"), (8, 120),
             ("fitness", "yoga", "training", "wellness"), ("Outdoor", "Personal Care")),
    Category("Tech Accessories", ("USB-C Charger", "Laptop Sleeve", "Wireless Earbuds",
                                  "Phone Stand", "Power Bank", "Cable Organizer",
                                  "Webcam Cover", "Mechanical Keyboard"),
             ("battery life", "sound", "build quality", "fit"), (10, 160),
             ("tech", "travel", "work-from-home", "gift"), ("Stationery", "Outdoor")),
    Category("Stationery", ("Dot Grid Notebook", "Fountain Pen", "Desk Organizer", "Planner",
                            "Sticky Notes", "Brush Pens", "Leather Journal", "Desk Mat"),
             ("paper quality", "ink flow", "binding", "design"), (5, 75),
             ("stationery", "journaling", "desk", "gift"), ("Tech Accessories", "Home & Living")),
    Category("Personal Care", ("Face Serum", "Shampoo Bar", "Beard Oil", "Hand Cream",
                               "Lip Balm", "Bath Salts", "Body Wash", "Sunscreen"),
             ("scent", "texture", "packaging", "skin feel"), (6, 65),
             ("skincare", "vegan", "natural", "self-care"), ("Fitness", "Home & Living")),
)
CATEGORY_INDEX = {category.name: index for index, category in enumerate(CATEGORIES)}
TITLE_ADJECTIVES = ("Classic", "Everyday", "Nordic", "Compact", "Pro", "Organic", "Handmade",
                    "Urban", "Studio", "Alpine", "Essential", "Signature")

# Review texts: {noun} is the product, {aspect} what the reviewer talks about.
POSITIVE_OPENINGS = ("Love this {noun}!", "Really happy with this {noun}.",
                     "Exactly what I was looking for.", "Great value for money.",
                     "This {noun} is fantastic.", "Five stars from me.")
POSITIVE_REMARKS = ("The {aspect} is excellent.", "The {aspect} exceeded my expectations.",
                    "Really impressed by the {aspect}.", "The {aspect} is just perfect.")
POSITIVE_CLOSINGS = ("Would buy again.", "Highly recommend.", "Fast shipping too.",
                     "Already ordered another one as a gift.")
NEUTRAL_OPENINGS = ("It's okay.", "Decent {noun} for the price.", "Does the job.",
                    "Not bad, not great.")
NEUTRAL_REMARKS = ("The {aspect} is fine but nothing special.", "The {aspect} could be better.",
                   "The {aspect} is average.")
NEUTRAL_CLOSINGS = ("Might buy again on sale.", "Average overall.", "It's fine for everyday use.")
NEGATIVE_OPENINGS = ("Really disappointed with this {noun}.", "Would not recommend.",
                     "Not worth the money.", "Terrible experience with this {noun}.")
NEGATIVE_REMARKS = ("The {aspect} is poor.", "The {aspect} fell apart after a week.",
                    "The {aspect} was not as described.", "The {aspect} is awful.")
NEGATIVE_CLOSINGS = ("I'm returning it.", "Waste of money.", "Would not buy again.")

PLANS = ("free", "pro", "team")
PLAN_WEIGHTS = (0.7, 0.25, 0.05)
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "CA", "AU", "IN", "BR")
COUNTRY_WEIGHTS = (0.32, 0.12, 0.12, 0.08, 0.05, 0.05, 0.08, 0.06, 0.07, 0.05)
SIGNUP_SOURCES = ("organic", "ads", "referral", "newsletter")  # the signup's utm_source
SIGNUP_SOURCE_WEIGHTS = (0.45, 0.3, 0.15, 0.1)
# Share of sessions by UTC hour: quiet at night, busiest in the evening.
HOURLY_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 6, 5, 5, 5, 6, 7, 8, 8, 7, 4, 2)

MEAN_VIEWS_PER_SESSION = 7.5
MAX_VIEWS_PER_SESSION = 30
SEARCH_PROBABILITY = 0.35
# Where a shopper goes after viewing an item (cumulative): the next items of the category's
# sequence, an item of the same category to their taste, a related category, anything.
NEXT_IN_SEQUENCE, SAME_CATEGORY, RELATED_CATEGORY = 0.55, 0.8, 0.93
SEQUENCE_STEPS = (1, 2, -1)
SEQUENCE_STEP_WEIGHTS = (0.6, 0.2, 0.2)
# Funnel: probability of each step given the previous one, for an item of low and of top fit.
CLICK_PROBABILITY = (0.15, 0.45)
ADD_TO_CART_PROBABILITY = (0.1, 0.35)
PURCHASE_PROBABILITY = (0.3, 0.6)
RATING_PROBABILITY = 0.25
REVIEW_PROBABILITY = 0.25
WEEKLY_RETURN_DECAY = (6.0, 2.5)  # Beta parameters: each user keeps ~70% of their visits a week.

# The recommendations widget: shown on this share of visits, RECOMMENDED_ITEMS items each.
# A first visit gets the popular items (nothing is known of the user yet); later visits
# get the version of the user's A/B arm.
RECOMMENDATION_SHARE = 0.6
RECOMMENDED_ITEMS = 10
AB_VERSIONS = ("demo-two-tower-1", "demo-two-tower-2")
# How far each version's ranking strays from the user's taste (Gumbel noise on log-taste):
# the older version mostly ranks by popularity, the newer one by the user's own taste.
AB_RANKING_NOISE = (2.0, 0.3)
# Chance of a click on a shown item at the top position, for an item of top fit; it falls
# with the cube of fit and with the position, and a user clicks at most one item.
RECOMMENDATION_CLICK_PROBABILITY = 0.06
POSITION_DECAY = 0.3
ATTRIBUTED_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})


@dataclass(frozen=True)
class DemoImpression:
    """One recommendations response, as the recommender's Impression stores it."""

    rec_id: uuid.UUID
    user_id: str
    item_ids: list[str]
    model_version: str | None
    strategy: str
    created_at: datetime


@dataclass(frozen=True)
class DemoShop:
    items: list[dict]  # rows for upsert_items
    users: list[dict]  # rows for upsert_users
    events: list[EventInput]  # in time order
    impressions: list[DemoImpression]  # in time order


@dataclass(frozen=True)
class _Catalog:
    item_ids: list[str]
    category_of: np.ndarray  # category index per item
    members: list[list[int]]  # items of each category, in browsing sequence
    position: np.ndarray  # index of each item within its category's sequence
    nouns: list[str]
    prices: list[float]


def window_end(day: date) -> datetime:
    """The demo window ends at the start (UTC) of `day`, so dashboards of the last N days
    are full when seeded today."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def generate_demo_shop(*, users: int = 600, items: int = 240, days: int = 90, seed: int = 7,
                       end: datetime) -> DemoShop:
    """The shop's catalog, users and events in the `days` before `end`; the same arguments
    always give the same shop, event ids included."""
    rng = np.random.default_rng(seed)
    draw = random.Random(seed)
    catalog, item_rows = _catalog(items, rng)
    taste, fit, category_preference = _tastes(users, catalog, rng)
    user_ids = [f"user-{n:04d}" for n in range(1, users + 1)]
    sessions = _sessions(users, days, rng)
    simulation = _Simulation(catalog=catalog, taste=taste, fit=fit,
                             category_preference=category_preference, draw=draw,
                             horizon=days * SECONDS_PER_DAY,
                             recommended=_recommended_items(taste, rng))
    for user, day in sessions:
        simulation.session(user=int(user), day=int(day))
    window_start = end - timedelta(days=days)
    run_key = f"{seed}:{users}:{items}:{days}"
    # Ids name "the n-th event (showing) of this seed and size", not the date, so seeding
    # again on a later day stores nothing new instead of doubling the demo data.
    rec_ids = [uuid.uuid5(DEMO_NAMESPACE, f"{run_key}:rec:{n}")
               for n in range(len(simulation.impressions))]
    impressions = [
        DemoImpression(rec_id=rec_ids[n], user_id=user_ids[user],
                       item_ids=[catalog.item_ids[item] for item in shown],
                       model_version=AB_VERSIONS[arm] if arm is not None else None,
                       strategy="two_tower" if arm is not None else "popular",
                       created_at=window_start + timedelta(seconds=second))
        for n, (second, user, shown, arm) in enumerate(simulation.impressions)
    ]
    events = [
        EventInput(event_id=uuid.uuid5(DEMO_NAMESPACE, f"{run_key}:{n}"), type=event_type,
                   user_id=user_ids[user],
                   item_id=catalog.item_ids[item] if item is not None else None,
                   timestamp=window_start + timedelta(seconds=second), value=value, text=text,
                   properties=properties,
                   rec_id=rec_ids[shown_in] if shown_in is not None else None)
        for n, (second, _, event_type, user, item, value, text, properties, shown_in)
        in enumerate(sorted(simulation.events, key=lambda event: event[:2]))
    ]
    return DemoShop(items=item_rows, users=_user_rows(user_ids, simulation.plans, draw), events=events,
                    impressions=sorted(impressions, key=lambda shown: shown.created_at))


def store_demo_shop(*, shop: DemoShop, batch_size: int = STORE_BATCH_SIZE) -> int:
    """Stores the catalog, the users' traits and the events; returns how many events were new."""
    with transaction.atomic():
        upsert_items(items=shop.items)
        upsert_users(users=shop.users)
    stored = 0
    for start in range(0, len(shop.events), batch_size):
        # Received when stored, as store_events stamps it (see ingestion.importers:
        # rollups move past a minute-old received time).
        stored += len(store_events(events=shop.events[start:start + batch_size],
                                   received_at=None))
    return stored


def count_by_type(events: Sequence[EventInput]) -> dict[str, int]:
    return dict(Counter(event.type for event in events).most_common())


def _catalog(items: int, rng: np.random.Generator) -> tuple[_Catalog, list[dict]]:
    category_of = rng.permutation(np.arange(items) % len(CATEGORIES))
    members: list[list[int]] = [[] for _ in CATEGORIES]
    position = np.zeros(items, dtype=int)
    for item, category in enumerate(category_of):
        position[item] = len(members[category])
        members[category].append(item)
    titles: list[str] = [""] * items
    nouns: list[str] = [""] * items
    for category, member_items in zip(CATEGORIES, members):
        names = list(product(TITLE_ADJECTIVES, category.nouns))
        order = rng.permutation(len(names))
        for rank, item in enumerate(member_items):
            adjective, noun = names[order[rank % len(names)]]
            edition = rank // len(names)
            titles[item] = f"{adjective} {noun}" + (f" Mk {edition + 1}" if edition else "")
            nouns[item] = noun.lower()
    low = np.array([CATEGORIES[c].price_range[0] for c in category_of])
    high = np.array([CATEGORIES[c].price_range[1] for c in category_of])
    prices = (np.exp(rng.uniform(np.log(low), np.log(high))).round() - 0.01).round(2).tolist()
    item_ids = [f"sku-{n:04d}" for n in range(1, items + 1)]
    item_rows = []
    for item in range(items):
        category = CATEGORIES[category_of[item]]
        tags = [category.tags[t] for t in sorted(rng.choice(len(category.tags), size=2,
                                                            replace=False))]
        item_rows.append({"item_id": item_ids[item], "title": titles[item],
                          "category": category.name, "tags": tags,
                          "attributes": {"price": prices[item]}})
    return _Catalog(item_ids=item_ids, category_of=category_of, members=members,
                    position=position, nouns=nouns, prices=prices), item_rows


def _tastes(users: int, catalog: _Catalog,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: taste (probability of choosing each item), fit (taste rank of each item,
    0 = least liked, 1 = most liked) and preference over categories."""
    # A sparse Dirichlet: most users care about two or three categories.
    category_preference = rng.dirichlet(np.full(len(CATEGORIES), 0.35), size=users)
    popularity = rng.lognormal(0.0, 0.8, size=len(catalog.item_ids))
    personal = rng.gamma(0.8, 1.0, size=(users, len(catalog.item_ids)))
    taste = category_preference[:, catalog.category_of] * popularity * personal
    taste /= taste.sum(axis=1, keepdims=True)
    fit = taste.argsort(axis=1).argsort(axis=1) / max(len(catalog.item_ids) - 1, 1)
    return taste, fit, category_preference


def _sessions(users: int, days: int, rng: np.random.Generator) -> np.ndarray:
    """(user, day) of every visit, sorted: a first visit on the arrival day, then weekly
    visit counts that decay at each user's own rate."""
    arrival = np.floor(rng.beta(1.4, 1.0, size=users) * days).astype(int)
    weekly_visits = rng.gamma(2.0, 1.7, size=users)
    decay = rng.beta(*WEEKLY_RETURN_DECAY, size=users)
    weeks = np.arange(days // 7 + 1)
    returns = rng.poisson(weekly_visits[:, None] * decay[:, None] ** (weeks + 1))
    user_of_visit = np.repeat(np.repeat(np.arange(users), len(weeks)), returns.ravel())
    week_of_visit = np.repeat(np.tile(weeks, users), returns.ravel())
    day_of_visit = arrival[user_of_visit] + 7 * week_of_visit + \
        rng.integers(1, 8, size=len(user_of_visit))
    visits = np.concatenate([np.column_stack([np.arange(users), arrival]),
                             np.column_stack([user_of_visit, day_of_visit])])
    visits = visits[visits[:, 1] < days]
    return visits[np.lexsort((visits[:, 1], visits[:, 0]))]


def _recommended_items(taste: np.ndarray, rng: np.random.Generator) -> dict[int | None, np.ndarray]:
    """What each version shows each user (rows of item indexes, best first), and under
    None the popular items everybody new gets. A version's ranking is the user's log-taste
    plus Gumbel noise of that version's scale: the larger the noise, the less personal."""
    count = min(RECOMMENDED_ITEMS, taste.shape[1])
    log_taste = np.log(taste)
    shown: dict[int | None, np.ndarray] = {
        None: np.argsort(-taste.sum(axis=0), kind="stable")[None, :count]}
    for arm, noise in enumerate(AB_RANKING_NOISE):
        scores = log_taste + noise * rng.gumbel(size=taste.shape)
        shown[arm] = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    return shown


def _user_rows(user_ids: list[str], plans: dict[int, str], draw: random.Random) -> list[dict]:
    """Traits: the plan chosen at signup, and a country for most users."""
    rows = []
    for user, user_id in enumerate(user_ids):
        traits: dict[str, str] = {}
        if user in plans:
            traits["plan"] = plans[user]
        if draw.random() < 0.75:
            traits["country"] = draw.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
        if traits:
            rows.append({"user_id": user_id, "traits": traits})
    return rows


# (second in window, sequence, type, user, item, value, text, properties, index of the
# impression it is attributed to): sorting on the first two keeps events of one second in
# the order they happened.
_Event = tuple[int, int, str, int, int | None, float | None, str, dict, int | None]
# (second in window, user, items shown, A/B arm or None for the popular items)
_Impression = tuple[int, int, list[int], int | None]


class _Simulation:
    """Walks each visit through search, browsing, the funnel and later ratings/reviews."""

    def __init__(self, *, catalog: _Catalog, taste: np.ndarray, fit: np.ndarray,
                 category_preference: np.ndarray, draw: random.Random, horizon: int,
                 recommended: dict[int | None, np.ndarray]):
        self.catalog = catalog
        self.recommended = {arm: rows.tolist() for arm, rows in recommended.items()}
        self.impressions: list[_Impression] = []
        # The impression an item of the current visit was recommended in.
        self.attributed: dict[int, int] = {}
        self.fit = fit.tolist()
        self.draw = draw
        self.horizon = horizon
        self.events: list[_Event] = []
        self.signed_up: set[int] = set()
        self.plans: dict[int, str] = {}  # chosen at signup
        self.hour_weights = list(accumulate(HOURLY_WEIGHTS))
        self.category_weights = [list(accumulate(row)) for row in category_preference.tolist()]
        self.taste = taste
        # Cumulative taste within one category, per (user, category), built on first use.
        self.taste_in_category: dict[tuple[int, int], list[float]] = {}
        self.step_weights = list(accumulate(SEQUENCE_STEP_WEIGHTS))

    def session(self, *, user: int, day: int) -> None:
        draw = self.draw
        hour = bisect_right(self.hour_weights, draw.random() * self.hour_weights[-1])
        second = day * SECONDS_PER_DAY + hour * 3600 + draw.randrange(3600)
        self.attributed = {}
        first_visit = user not in self.signed_up
        if first_visit:
            self.signed_up.add(user)
            self.plans[user] = draw.choices(PLANS, PLAN_WEIGHTS)[0]
            self._emit(second, "signup", user, None, properties={
                "plan": self.plans[user],
                "utm_source": draw.choices(SIGNUP_SOURCES, SIGNUP_SOURCE_WEIGHTS)[0]})
            second += self._pause()
        category = self._pick(self.category_weights[user])
        item = None
        if draw.random() < RECOMMENDATION_SHARE and second < self.horizon:
            item = self._recommendations(user, second, arm=None if first_visit else user % 2)
            if item is not None:
                self._emit(second, "click", user, item)
                second += self._pause()
        if item is None and draw.random() < SEARCH_PROBABILITY:
            query = draw.choice(CATEGORIES[category].nouns).lower()
            self._emit(second, "search", user, None, properties={"query": query})
            second += self._pause()
        if item is None:
            item = self._favourite_in(user, category)
        cart: list[int] = []
        views = min(1 + int(draw.expovariate(1 / (MEAN_VIEWS_PER_SESSION - 1))),
                    MAX_VIEWS_PER_SESSION)
        for index in range(views):
            fit = self.fit[user][item]
            self._emit(second, "view", user, item)
            second += self._pause()
            # The page of a recommended item was opened by its click in the widget.
            clicked = index == 0 and item in self.attributed
            if not clicked and draw.random() < _by_fit(CLICK_PROBABILITY, fit):
                self._emit(second, "click", user, item)
                second += self._pause()
                clicked = True
            if clicked:
                if draw.random() < _by_fit(ADD_TO_CART_PROBABILITY, fit):
                    self._emit(second, "add_to_cart", user, item)
                    second += self._pause()
                    cart.append(item)
            item = self._next_item(user, item)
        for item in cart:
            if draw.random() < _by_fit(PURCHASE_PROBABILITY, self.fit[user][item]):
                self._emit(second, "purchase", user, item, value=self.catalog.prices[item])
                second += self._pause()
                self._maybe_rate(user, item, second)

    def _recommendations(self, user: int, second: int, *, arm: int | None) -> int | None:
        """Logs the widget's impression; returns the item the user clicked in it, if any."""
        shown = self.recommended[arm][0 if arm is None else user]
        self.impressions.append((second, user, shown, arm))
        for position, item in enumerate(shown):
            chance = (RECOMMENDATION_CLICK_PROBABILITY * self.fit[user][item] ** 3
                      / (1 + POSITION_DECAY * position))
            if self.draw.random() < chance:
                self.attributed[item] = len(self.impressions) - 1
                return item
        return None

    def _maybe_rate(self, user: int, item: int, purchased_at: int) -> None:
        draw = self.draw
        chance = draw.random()
        if chance >= RATING_PROBABILITY + REVIEW_PROBABILITY:
            return
        second = purchased_at + draw.randrange(SECONDS_PER_DAY, 12 * SECONDS_PER_DAY)
        rating = self._rating(self.fit[user][item])
        if chance < REVIEW_PROBABILITY:
            self._emit(second, "review", user, item, value=float(rating),
                       text=self._review_text(item, rating))
        else:
            self._emit(second, "rating", user, item, value=float(rating))

    def _rating(self, fit: float) -> int:
        """About 85% of ratings are 4 or 5 stars; worse fitting items get more low ones."""
        draw = self.draw
        if draw.random() < 0.09 + 0.35 * (1 - fit):
            return draw.choices((1, 2, 3), (3, 3, 4))[0]
        return 5 if draw.random() < 0.25 + 0.4 * fit else 4

    def _review_text(self, item: int, rating: int) -> str:
        draw = self.draw
        if rating >= 4:
            banks = (POSITIVE_OPENINGS, POSITIVE_REMARKS, POSITIVE_CLOSINGS)
            # Happy reviewers still mention a weak spot now and then.
            if rating == 4 and draw.random() < 0.3:
                banks = (POSITIVE_OPENINGS, NEUTRAL_REMARKS, POSITIVE_CLOSINGS)
        elif rating == 3:
            banks = (NEUTRAL_OPENINGS, NEUTRAL_REMARKS, NEUTRAL_CLOSINGS)
        else:
            banks = (NEGATIVE_OPENINGS, NEGATIVE_REMARKS, NEGATIVE_CLOSINGS)
        aspect = draw.choice(CATEGORIES[self.catalog.category_of[item]].aspects)
        sentences = [draw.choice(bank) for bank in banks]
        if draw.random() < 0.3:  # Short reviews: no closing sentence.
            sentences.pop()
        return " ".join(sentences).format(noun=self.catalog.nouns[item], aspect=aspect)

    def _next_item(self, user: int, item: int) -> int:
        draw = self.draw
        category = int(self.catalog.category_of[item])
        route = draw.random()
        if route < NEXT_IN_SEQUENCE:
            sequence = self.catalog.members[category]
            step = SEQUENCE_STEPS[self._pick(self.step_weights)]
            return sequence[(self.catalog.position[item] + step) % len(sequence)]
        if route < SAME_CATEGORY:
            return self._favourite_in(user, category)
        if route < RELATED_CATEGORY:
            related = draw.choice(CATEGORIES[category].related)
            return self._favourite_in(user, CATEGORY_INDEX[related])
        return self._favourite_in(user, self._pick(self.category_weights[user]))

    def _favourite_in(self, user: int, category: int) -> int:
        members = self.catalog.members[category]
        if not members:  # Fewer items than categories: any item will do.
            members = range(len(self.catalog.item_ids))
            category = -1
        key = (user, category)
        if key not in self.taste_in_category:
            self.taste_in_category[key] = list(accumulate(self.taste[user, list(members)]))
        return members[self._pick(self.taste_in_category[key])]

    def _pick(self, cumulative_weights: list[float]) -> int:
        index = bisect_right(cumulative_weights, self.draw.random() * cumulative_weights[-1])
        return min(index, len(cumulative_weights) - 1)

    def _pause(self) -> int:
        return 5 + int(self.draw.expovariate(1 / 40))

    def _emit(self, second: int, event_type: str, user: int, item: int | None, *,
              value: float | None = None, text: str = "", properties: dict | None = None) -> None:
        if second < self.horizon:  # A visit late on the last day stops at the window's end.
            # The shop passes a recommended item's rec_id along with what is done to it
            # in the visit; ratings and reviews come days later, without one.
            shown_in = self.attributed.get(item) if event_type in ATTRIBUTED_TYPES else None
            self.events.append((second, len(self.events), event_type, user, item, value, text,
                                properties or {}, shown_in))


def _by_fit(probabilities: tuple[float, float], fit: float) -> float:
    low, high = probabilities
    return low + (high - low) * fit

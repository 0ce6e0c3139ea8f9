"""What the analytics operations' OpenAPI schema cannot say, taught to schemathesis: a
date range runs forwards, lies within EARLIEST_DAY and LATEST_DAY and covers at most
MAX_RANGE_DAYS days, and ``compare`` names two
different versions (rules across parameters or values, answered with a 400 in the error
shape). Queries breaking them are not generated;
every other schema-valid query must be accepted."""

from datetime import date, timedelta

import schemathesis

# As analytics.insights.common's (no Django in this process).
MAX_RANGE_DAYS = 731
EARLIEST_DAY, LATEST_DAY = date(1900, 1, 1), date(9998, 12, 31)
DEFAULT_RANGE_DAYS = 30


def _day(value) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


@schemathesis.hook
def filter_query(ctx, query):
    if not query:
        return True
    compare = query.get("compare")
    if isinstance(compare, str) and compare.count(",") == 1 and \
            len({name.strip() for name in compare.split(",")}) == 1:
        return False  # two different versions, a rule across the pair
    if "start" not in query and "end" not in query:
        return True
    end = _day(query.get("end")) or date.today()
    try:
        start = _day(query.get("start")) or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    except OverflowError:
        return False  # an end in the first days of year 1 leaves no room for the default start
    if "start" in query and _day(query["start"]) is None or \
            "end" in query and _day(query["end"]) is None:
        return True  # not a date: the schema's own rule, left to the fuzzer
    return (EARLIEST_DAY <= start <= end <= LATEST_DAY
            and (end - start).days + 1 <= MAX_RANGE_DAYS)

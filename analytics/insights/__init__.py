"""Product analytics read from the event log, one module per insight: overview, funnels,
retention, items, sentiment, recommendations; ``common`` holds the date range and what
they share.

Every aggregate runs in the database (ORM annotations, or portable SQL where the ORM cannot
express a per-user ordered funnel); Python only reshapes the small aggregated rows, so the
cost grows with the number of days, items and steps shown, never with the number of events.
"""

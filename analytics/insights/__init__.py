"""Product analytics read from the event log, one module per insight: overview, trends,
funnels, retention, lifecycle, stickiness, items, sentiment, recommendations and a user's
timeline; ``common`` holds the date range and what they share.

Every aggregate runs in the database (ORM annotations, or portable SQL where the ORM cannot
express a per-user ordered funnel); Python reshapes aggregated rows. Most insights' rows
grow with the days, items and steps shown; lifecycle's with persons × periods, and the
timeline's with the one person's events (capped by its ``limit``).
"""

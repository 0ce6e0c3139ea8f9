from django.dispatch import Signal

# Sent after commit with `event_pks`: newly stored events that carry review text.
# The recommender app listens to score their sentiment without ingestion depending on it.
events_with_text_stored = Signal()

from django.dispatch import Signal

# Sent after commit with `event_pks`: newly stored events that carry review text.
# The recommender app listens to score their sentiment without ingestion depending on it.
events_with_text_stored = Signal()

# Sent inside the transaction that changed them, with `item_pks`: items whose category
# changed. Analytics marks their days for a rollup rebuild in the same transaction.
item_categories_changed = Signal()

# Sent after commit with `count`: a batch of new events was stored (analytics schedules a
# rollup update).
events_stored = Signal()

# Sent inside the transaction that deletes or edits them, with `events` (a queryset): events
# about to go with an admin's deletion of them, their users or their items (sent before the
# deletion), or an event an admin edits (sent before the edit and again after it, for the
# day it was on and the day it is on). Analytics marks their days for a rollup rebuild.
events_changing = Signal()

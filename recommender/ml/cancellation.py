"""Cooperative cancellation shared by the training functions of this package."""


class TrainingCancelled(Exception):
    """Raised from inside a training loop when the caller's ``should_stop()`` returns True."""

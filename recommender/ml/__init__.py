"""Training and scoring as plain functions over arrays and DataFrames; no Django here.

TensorFlow Recommenders needs Keras 2: tf-keras is selected before TensorFlow is first
imported, and every TensorFlow import in Lodestar goes through this package.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

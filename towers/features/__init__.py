"""Feature schema and encoders: which columns feed which tower, and how values become ids and floats."""

from towers.features.encoder import FeatureEncoders, Vocabulary, input_specs
from towers.features.schema import ITEM_KEY, WEIGHT, FeatureSchema, FeatureSpec

__all__ = ["ITEM_KEY", "WEIGHT", "FeatureEncoders", "FeatureSchema", "FeatureSpec", "Vocabulary", "input_specs"]

"""The networks: a tower (embeddings -> MLP -> unit vector), SENet field gating, DAT augmented vectors, both towers."""

from towers.nn.augmented import AugmentedVectors
from towers.nn.model import TwoTowerModel
from towers.nn.senet import FieldGate
from towers.nn.tower import Z_CLIP, Tower

__all__ = ["Z_CLIP", "AugmentedVectors", "FieldGate", "Tower", "TwoTowerModel"]

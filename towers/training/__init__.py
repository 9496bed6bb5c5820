"""Training: examples from Arrow tables, the model-agnostic trainer, ``fit_two_tower`` and the trained result."""

from towers.config import TrainerConfig
from towers.training.distributed import DataParallel
from towers.training.example import example_weights, item_key_space, item_keys, with_item_features
from towers.training.fit import fit_two_tower
from towers.training.trainable import TrainableTowers
from towers.training.trained import TrainedTowers
from towers.training.trainer import Trainer, TrainingHistory, build_optimizer, resolve_device, seed_everything

__all__ = [
    "DataParallel",
    "TrainableTowers",
    "TrainedTowers",
    "Trainer",
    "TrainerConfig",
    "TrainingHistory",
    "build_optimizer",
    "example_weights",
    "fit_two_tower",
    "item_key_space",
    "item_keys",
    "resolve_device",
    "seed_everything",
    "with_item_features",
]

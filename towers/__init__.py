"""towers: the model side of Tower Platform. Imports torch, numpy and pyarrow (onnx and onnxruntime inside the
ONNX functions); never feast, qdrant_client, sqlalchemy, typer or tower_platform.

    config.py     TowerConfig: nested sections (encoders, towers, loss, ssl, dat, training)
    errors.py     TowersError and its subclasses (the platform maps them once, at its edge)
    features/     FeatureSchema, FeatureSpec, FeatureEncoders
    nn/           Tower, TwoTowerModel, SENet field gate, DAT augmented vectors
    losses/       corrected softmax, BCE, DAT mimic and category alignment, SSL feature masking
    sampling/     streaming frequency estimator, corpus sampler, item embedding queue
    tasks/        RetrievalTask (candidates, log q, hit removal, loss) and its auxiliary objectives
    training/     Trainer, fit_two_tower, TrainedTowers
    evaluation/   the next-item and cutoff protocols (docs/evaluation.md), EvaluationData, classical baselines
    onnx/         export with parity check, the tower file contract and its one runtime reader
    progress.py   the one progress reporter (a bar on a terminal, periodic lines with rate and ETA elsewhere)
"""

from towers.errors import TowersError
from towers.features.schema import FeatureSchema, FeatureSpec

__all__ = ["FeatureSchema", "FeatureSpec", "TowersError"]

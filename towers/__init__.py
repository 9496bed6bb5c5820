"""towers: the model side of Tower Platform.

Feature encoders, query and item towers, losses, the streaming frequency estimator, the trainer, full-corpus
evaluation, classical baselines and ONNX export. Imports only torch and numpy (onnx/onnxruntime inside the export
functions, pyarrow for column-wise conversion); never feast, qdrant_client, sqlalchemy, typer or tower_platform.
"""

from towers.schema import FeatureSchema, FeatureSpec

__all__ = ["FeatureSchema", "FeatureSpec"]

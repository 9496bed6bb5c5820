"""Where candidates and their probabilities come from: the streaming frequency estimator, the corpus, the queue."""

from towers.sampling.corpus import CorpusSampler
from towers.sampling.frequency import StreamingFrequencyEstimator
from towers.sampling.queue import ItemEmbeddingQueue

__all__ = ["CorpusSampler", "ItemEmbeddingQueue", "StreamingFrequencyEstimator"]

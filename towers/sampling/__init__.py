"""Where candidates and their probabilities come from: the streaming frequency estimator, the corpus (sampled or
embedded whole), the queue."""

from towers.sampling.corpus import CorpusSampler
from towers.sampling.corpus_table import CorpusEmbeddingTable
from towers.sampling.frequency import StreamingFrequencyEstimator
from towers.sampling.queue import ItemEmbeddingQueue

__all__ = ["CorpusEmbeddingTable", "CorpusSampler", "ItemEmbeddingQueue", "StreamingFrequencyEstimator"]

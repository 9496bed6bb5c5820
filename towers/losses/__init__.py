"""Loss functions as small tensor functions: the corrected softmax and its pieces, BCE, DAT mimic and CAL, SSL views."""

from towers.losses.dat import category_alignment_loss, category_covariances, mimic_loss
from towers.losses.masking import FeatureMaskingTask
from towers.losses.softmax import (
    correct_sampling_bias,
    full_corpus_softmax_loss,
    in_batch_softmax_loss,
    mixed_negative_log_q,
    remove_accidental_hits,
    sampled_binary_cross_entropy,
    similarity_logits,
    uniform_log_q,
    weighted_cross_entropy,
    weighted_softmax_cross_entropy,
)

__all__ = [
    "FeatureMaskingTask",
    "category_alignment_loss",
    "category_covariances",
    "correct_sampling_bias",
    "full_corpus_softmax_loss",
    "in_batch_softmax_loss",
    "mimic_loss",
    "mixed_negative_log_q",
    "remove_accidental_hits",
    "sampled_binary_cross_entropy",
    "similarity_logits",
    "uniform_log_q",
    "weighted_cross_entropy",
    "weighted_softmax_cross_entropy",
]

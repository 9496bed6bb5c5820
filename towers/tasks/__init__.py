"""The retrieval task: candidates, log q, hit removal and the loss, composing auxiliary objectives."""

from towers.tasks.auxiliary import (
    AuxiliaryLoss,
    CategoryAlignmentLoss,
    MimicLoss,
    SelfSupervisedLoss,
    auxiliary_losses,
)
from towers.tasks.retrieval import Candidates, RetrievalTask

__all__ = [
    "AuxiliaryLoss",
    "Candidates",
    "CategoryAlignmentLoss",
    "MimicLoss",
    "RetrievalTask",
    "SelfSupervisedLoss",
    "auxiliary_losses",
]

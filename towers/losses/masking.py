"""Two augmented views of an item for the self-supervised auxiliary loss (Yao et al., CIKM 2021).

Stage 1, feature masking, over the F fields of the item tower (one field per embedded string feature, then one per
numeric feature; ``Tower.field_names`` gives the order). A masked field takes a learned default embedding inside the
tower. The two views mask complementary sets, so no field is masked in both and every field is masked in one:

    Random Feature Masking (RFM)      per item, a random floor(F/2) fields in view 1, the rest in view 2
    Correlated Feature Masking (CFM)  per batch, a seed field s drawn uniformly, masked in view 1 together with the
                                      floor(F/2) - 1 fields of highest mutual information with s; view 2 masks the rest

With F <= 3 fields CFM masks floor(F/2) = 1 field, the seed alone, so the information never enters (it is random
masking of one field); the task warns when built so. Without an information matrix (never measured on a corpus) CFM
would pick the same fields by the tie order of a zero matrix; the task warns and masks at random instead.

Stage 2, value dropout: each value of a multi-valued feature is dropped (set to the padding id 0) with probability
``rate``, independently in each view.

Mutual information of two fields is estimated on the item corpus from discrete codes: categorical ids as they are,
multi-valued features by their first value, numeric features by quantile bin (NaN its own bin):
    MI(a, b) = sum_{x, y} p(x, y) * log(p(x, y) / (p(x) * p(y)))   in nats.
"""

from __future__ import annotations

from collections.abc import Sequence

import warnings

import numpy as np
import torch
from torch import nn

from towers.errors import TowersConfigError
from towers.losses.softmax import in_batch_softmax_loss


def discretised_numeric(values: np.ndarray, *, bins: int) -> np.ndarray:
    """values float [N] (NaN/inf = missing) -> int64 codes [N]: quantile bin 0..bins-1, missing = bins."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    codes = np.full(values.shape, bins, dtype=np.int64)
    if finite.any():
        edges = np.unique(np.quantile(values[finite], np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        codes[finite] = np.searchsorted(edges, values[finite], side="right")
    return codes


def field_codes(values: np.ndarray, *, kind: str, bins: int) -> np.ndarray:
    """One encoded item feature -> discrete codes int64 [N] for mutual information.

    categorical int64 [N]: the ids; multi_categorical int64 [N, L]: the first value (0 when empty); numeric: bins.
    """
    if kind == "numeric":
        return discretised_numeric(values, bins=bins)
    values = np.asarray(values, dtype=np.int64)
    return values[:, 0] if values.ndim == 2 else values


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """MI in nats of two discrete code arrays int [N] (the empirical joint distribution of the pairs)."""
    a = np.unique(np.asarray(a), return_inverse=True)[1].ravel()  # codes 0..Ka-1
    b = np.unique(np.asarray(b), return_inverse=True)[1].ravel()  # codes 0..Kb-1
    n = a.size
    if n == 0:
        return 0.0
    kb = int(b.max()) + 1
    pairs, joint = np.unique(a.astype(np.int64) * kb + b, return_counts=True)  # [P], [P]
    p_ab = joint / n
    p_a = np.bincount(a) / n
    p_b = np.bincount(b) / n
    return float(np.sum(p_ab * np.log(p_ab / (p_a[pairs // kb] * p_b[pairs % kb]))))


def pairwise_mutual_information(codes: Sequence[np.ndarray]) -> np.ndarray:
    """F code arrays [N] -> symmetric MI matrix float32 [F, F] (the diagonal holds each field's entropy)."""
    count = len(codes)
    matrix = np.zeros((count, count), dtype=np.float32)
    for i in range(count):
        for j in range(i, count):
            matrix[i, j] = matrix[j, i] = mutual_information(codes[i], codes[j])
    return matrix


def random_feature_masks(batch: int, fields: int, *, generator: torch.Generator | None = None,
                         device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RFM: bool masks ([B, F], [B, F]); per row floor(F/2) random fields masked in view 1, the complement in view 2."""
    scores = torch.rand(batch, fields, generator=generator).to(device)  # [B, F]
    rank = scores.argsort(dim=1).argsort(dim=1)  # [B, F], a random permutation per row
    first = rank < fields // 2  # [B, F]
    return first, ~first


def correlated_feature_masks(
    information: torch.Tensor, batch: int, *, seed_field: int | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CFM: bool masks ([B, F], [B, F]) from a mutual-information matrix [F, F].

    A seed field s is drawn uniformly (or given as ``seed_field``); view 1 masks s and the floor(F/2) - 1 other fields
    of highest MI with s (the same fields for every row of the batch); view 2 masks the complement.
    """
    fields = int(information.shape[0])
    seed = int(torch.randint(0, fields, (1,), generator=generator)) if seed_field is None else int(seed_field)
    affinity = information[seed].clone()  # [F]
    affinity[seed] = float("inf")  # the seed itself always comes first
    group = affinity.argsort(descending=True)[: max(fields // 2, 1)]  # [F/2]
    first = torch.zeros(fields, dtype=torch.bool, device=information.device)
    first[group] = True
    first = first.unsqueeze(0).expand(batch, fields)  # [B, F]
    return first, ~first


def drop_multi_values(ids: torch.Tensor, *, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """ids int64 [B, L] -> ids [B, L] with each value set to the padding id 0 with probability ``rate``."""
    if rate <= 0:
        return ids
    keep = torch.rand(ids.shape, generator=generator).to(ids.device) >= rate  # [B, L]
    return ids * keep.to(ids.dtype)


class FeatureMaskingTask(nn.Module):
    """Makes the two views of a batch of items and scores them with InfoNCE.

    ``information`` [F, F] (mutual information of the item tower's fields) is needed for CFM only.
    """

    information: torch.Tensor

    def __init__(
        self,
        *,
        fields: int,
        masking: str,
        temperature: float,
        dropout: float,
        multi_valued: Sequence[str],
        information: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if masking not in ("random", "correlated"):
            raise TowersConfigError(f"masking {masking!r} must be 'random' or 'correlated'")
        if fields < 2:
            raise TowersConfigError(f"feature masking needs at least two item fields, got {fields}")
        self.fields, self.masking, self.temperature, self.dropout = fields, masking, temperature, dropout
        self.multi_valued = list(multi_valued)
        if masking == "correlated" and fields // 2 <= 1:
            warnings.warn(
                f"Correlated feature masking over {fields} item fields masks the seed field alone (floor({fields}/2) = "
                "1 field per view), so the mutual information is never used and it behaves as random masking; add "
                "item features or set ssl.masking to 'random'.",
                UserWarning,
                stacklevel=2,
            )
        self.register_buffer("information", torch.zeros(fields, fields), persistent=False)  # [F, F]
        self.has_information = False
        self._warned_without_information = False
        if information is not None:
            self.set_information(information)

    def set_information(self, information: np.ndarray | torch.Tensor) -> None:
        """The mutual-information matrix [F, F] of the item tower's fields (measured on the corpus)."""
        matrix = torch.as_tensor(np.asarray(information, dtype=np.float32))
        if tuple(matrix.shape) != (self.fields, self.fields):
            raise TowersConfigError(
                f"the mutual-information matrix has shape {tuple(matrix.shape)}, expected {(self.fields, self.fields)}"
            )
        self.information.copy_(matrix.to(self.information.device))
        self.has_information = True

    def masks(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.masking == "correlated" and self.has_information:
            return correlated_feature_masks(self.information, batch)
        if self.masking == "correlated" and not self._warned_without_information:
            warnings.warn(
                "Correlated feature masking was asked for but the mutual information was never computed (no item "
                "corpus attached), so the views are masked at random; attach the corpus before training.",
                UserWarning,
                stacklevel=2,
            )
            self._warned_without_information = True
        return random_feature_masks(batch, self.fields, device=self.information.device)

    def view(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One stage-2 view: multi-valued features with values dropped."""
        return {
            name: drop_multi_values(value, rate=self.dropout) if name in self.multi_valued else value
            for name, value in features.items()
        }

    def loss(self, tower: nn.Module, features: dict[str, torch.Tensor], keys: torch.Tensor) -> torch.Tensor:
        """InfoNCE between the two views of each item; ``keys`` [B] identify items (repeats are not negatives)."""
        batch = int(keys.shape[0])
        first_mask, second_mask = self.masks(batch)  # [B, F] each
        # both views in one tower pass over [2B] rows (each view's own value dropout and mask)
        views = [self.view(features), self.view(features)]
        stacked = {name: torch.cat([views[0][name], views[1][name]]) for name in features}  # {name: [2B, ...]}
        both = tower(stacked, field_mask=torch.cat([first_mask, second_mask]))  # [2B, D]
        first, second = both[:batch], both[batch:]  # [B, D] each
        return in_batch_softmax_loss(
            first, second, temperature=self.temperature, positive_ids=keys, candidate_ids=keys
        )

"""EASE (Steck, WWW 2019) over the items with enough fit interactions.

    B = I - P diagMat(1 / diag(P)),  P = (X^T X + lambda I)^-1,  score = history @ B

X is the binary user x item matrix over the covered items: the ``max_items`` most interacted fit items (fit count
descending, then the lower item code: the harness's popularity order) among those with at least ``min_count`` fit
interactions. Items left out are never recommended by it (score -inf; the harness orders them by fit popularity
after every covered item). B is dense F x F over the covered items, so the cut bounds memory: float64 F^2 is
800 MB at the default 10,000 items, computed in place. With every fit item covered (the default on catalogues up to
10,000 items, MovieLens among them) this is the full EASE of ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from towers.errors import TowersInputError
from towers.evaluation.item_space import ItemSpace, LinearItemModel, check_fit_codes

EASE_LAMBDAS: tuple[float, ...] = (50.0, 200.0, 500.0, 1000.0)
EASE_MAX_ITEMS = 10_000  # default cut: the most interacted fit items EASE covers (F^2 float64 = 800 MB)
GRAM_BLOCK_ENTRIES = 1 << 24  # entries of X^T X formed per block of rows


class EASE(LinearItemModel):
    """Embarrassingly Shallow Autoencoder: closed-form item-item weights with a zero diagonal."""

    uncovered_score = -math.inf

    def __init__(self, *, l2: float = 500.0, max_items: int | None = EASE_MAX_ITEMS, min_count: int = 1) -> None:
        super().__init__()
        if l2 <= 0:
            raise TowersInputError(f"EASE needs l2 (lambda) > 0, got {l2}")
        if max_items is not None and max_items < 1:
            raise TowersInputError(f"EASE needs max_items >= 1 (or None for every fit item), got {max_items}")
        if min_count < 1:
            raise TowersInputError(f"EASE needs min_count >= 1, got {min_count}")
        self.l2 = float(l2)
        self.max_items = None if max_items is None else int(max_items)
        self.min_count = int(min_count)
        self.n_fit_items = 0  # fit items seen by the last fit (covered or not)

    def fit(self, user_codes: Any, *, item_codes: Any, n_users: int, n_items: int, times_s: Any = None) -> EASE:
        users, items = check_fit_codes(user_codes, item_codes, n_users=n_users, n_items=n_items)
        counts = np.bincount(items, minlength=n_items)  # (n_items,)
        self.n_fit_items = int(np.count_nonzero(counts))
        covered = frequent_items(counts, max_items=self.max_items, min_count=self.min_count)
        if covered.size == 0:
            raise TowersInputError(
                f"EASE min_count={self.min_count} leaves no item (the most interacted has {int(counts.max())} fit "
                "interactions); lower min_count"
            )
        self.space = ItemSpace.of(covered, n_items=n_items)
        self.weights = ease_weights(self.space.user_item_matrix(users, items, dtype=np.float64), l2=self.l2)
        return self

    def describe(self) -> str:
        """How many fit items the last fit covered, for a report line."""
        covered = len(self.space) if self.space is not None else 0
        cut = f"max_items {self.max_items}" if self.max_items is not None else "no max_items"
        return f"EASE covers {covered:,} of {self.n_fit_items:,} fit items ({cut}, min_count {self.min_count})"


def frequent_items(counts: np.ndarray, *, max_items: int | None, min_count: int) -> np.ndarray:
    """Item codes with >= min_count interactions, the max_items most interacted (count desc, then code asc)."""
    eligible = np.flatnonzero(counts >= max(min_count, 1))
    order = np.lexsort((eligible, -counts[eligible]))  # most interacted first, ties by the lower code
    return np.sort(eligible[order[:max_items]] if max_items is not None else eligible)


def ease_weights(matrix: sp.csr_matrix | np.ndarray, *, l2: float) -> np.ndarray:
    """EASE closed form from the binary user x item matrix X [U, F]: B = -P / diag(P) column-wise, diag(B) = 0.

    float64 throughout, float32 out. With fewer users than items (MovieLens: 600 users, 9k items) the Woodbury
    identity P = (I - X^T (l2 I_U + X X^T)^-1 X) / l2 needs a U x U solve; otherwise P is the inverse of
    X^T X + l2 I by a Cholesky factorisation, factor and inverse overwriting the one F x F array.
    """
    x = sp.csr_matrix(matrix, dtype=np.float64)
    n_users, n_items = x.shape
    if n_users < n_items:
        dense = x.toarray()  # (U, F): fewer users than items, smaller than the F x F result
        kernel = dense @ dense.T  # (U, U)
        kernel[np.diag_indices(n_users)] += l2
        projected = scipy.linalg.cho_solve(scipy.linalg.cho_factor(kernel), dense)  # (U, F) = kernel^-1 X
        precision = dense.T @ projected  # (F, F)
        del dense, projected
        precision *= -1.0
        precision[np.diag_indices(n_items)] += 1.0
        precision /= l2
    else:
        precision = gram(x)  # (F, F) X^T X
        precision[np.diag_indices(n_items)] += l2
        invert_spd_in_place(precision)
    diagonal = precision.diagonal().copy()  # (F,)
    precision /= -diagonal[None, :]
    np.fill_diagonal(precision, 0.0)
    return precision.astype(np.float32)


def gram(x: sp.csr_matrix, *, block_entries: int = GRAM_BLOCK_ENTRIES) -> np.ndarray:
    """Dense float64 X^T X [F, F] from CSR X [U, F], a block of rows at a time (no sparse F x F intermediate)."""
    n_items = x.shape[1]
    columns = x.T.tocsr()  # (F, U)
    out = np.empty((n_items, n_items), dtype=np.float64)
    rows = max(1, block_entries // max(n_items, 1))
    for begin in range(0, n_items, rows):
        end = min(begin + rows, n_items)
        out[begin:end] = (columns[begin:end] @ x).toarray()
    return out


def invert_spd_in_place(a: np.ndarray, *, block_entries: int = GRAM_BLOCK_ENTRIES) -> None:
    """Overwrite the symmetric positive definite C-ordered ``a`` [F, F] with its inverse (LAPACK potrf + potri).

    ``a.T`` is the Fortran-ordered view LAPACK works on in place; it fills one triangle with the inverse, which is
    then mirrored into the other, a block of rows at a time.
    """
    view = a.T  # Fortran order, same memory; symmetric, so the same matrix
    factor, info = scipy.linalg.lapack.dpotrf(view, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise TowersInputError(f"EASE: X^T X + l2 I is not positive definite (LAPACK potrf info {info}); raise l2")
    inverse, info = scipy.linalg.lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise TowersInputError(f"EASE: the inverse of X^T X + l2 I failed (LAPACK potri info {info}); raise l2")
    if not np.shares_memory(inverse, a):  # LAPACK copied after all: take its result
        a[...] = inverse.T
    # The upper triangle of the Fortran view is the lower triangle of ``a``: mirror it into the upper one.
    n = a.shape[0]
    step = max(1, block_entries // max(n, 1))
    for begin in range(0, n, step):
        end = min(begin + step, n)
        a[begin:end, end:] = a[end:, begin:end].T
        block = a[begin:end, begin:end]
        upper = np.triu_indices(end - begin, 1)
        block[upper] = block.T[upper]

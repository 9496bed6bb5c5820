"""The dataclass that rebuilds a two-tower model and says how to train it (like nanoGPT's ``GPTConfig``).

A checkpoint stores ``TowerConfig.to_dict()`` next to the encoders; ``TowerConfig.from_dict`` plus the encoders
rebuild the model exactly. Defaults train well on the bundled MovieLens data (about 100k interactions, 9.7k items)
in about a minute on two CPU cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

OptimizerName = Literal["adamw", "adagrad"]
MainLoss = Literal["softmax", "bce"]
Masking = Literal["random", "correlated"]
SslSampling = Literal["corpus", "training"]
UnseenId = Literal["zero", "learned"]


@dataclass(frozen=True)
class TowerConfig:
    # --- encoders -----------------------------------------------------------------------------------------------
    min_count: int = 1  # a token seen fewer times in the training data maps to the OOV id
    max_vocab_size: int | None = None  # keep the most frequent tokens of a vocabulary group (None: all)
    oov_buckets: int = 1  # > 1: out-of-vocabulary tokens are hashed (MurmurHash3) into this many buckets
    use_item_id: bool = True  # the item id column is an input of the item tower (vocab group "item_id")
    use_user_id: bool = False  # the user id column is an input of the query tower (vocab group "user_id")

    # --- towers -------------------------------------------------------------------------------------------------
    embedding_dim: int = 64  # width of every embedding table
    hidden_dims: tuple[int, ...] = (256,)  # MLP layers of each tower before the output projection
    output_dim: int = 64  # D, the dimension of the L2-normalised tower outputs
    dropout: float = 0.0
    temperature: float = 0.05  # tau: logits are <q, v> / tau

    # --- loss ---------------------------------------------------------------------------------------------------
    sampling_bias_correction: bool = True  # s^c = s - log q_j; False: the plain in-batch softmax
    remove_accidental_hits: bool = True
    uniform_negatives: int = 0  # B': items sampled uniformly from the corpus per batch (mixed negatives)
    estimator_buckets: int = 1 << 16  # H, size of each array of the streaming frequency estimator
    estimator_hashes: int = 2  # m, number of arrays (the multi-hash variant when > 1)
    estimator_alpha: float = 0.01  # learning rate of the estimator
    main_loss: MainLoss = "softmax"  # "bce": binary cross-entropy over the positive and bce_negatives random items
    bce_negatives: int = 8  # S, corpus items drawn uniformly per batch as the negatives of every row (main_loss="bce")
    queue_size: int = 0  # > 0: a queue of this many recent item embeddings adds negatives (MoCo style); 0: off

    # --- self-supervised auxiliary loss (Yao et al., CIKM 2021); off while ssl_weight == 0 -------------------------
    ssl_weight: float = 0.0  # alpha in L = L_main + alpha * L_self
    ssl_masking: Masking = "random"  # "random" (RFM) or "correlated" (CFM, by mutual information of item features)
    ssl_temperature: float = 0.1  # tau of the InfoNCE over the two views
    ssl_dropout: float = 0.1  # share of the values of multi-valued item features dropped in each view
    ssl_batch_size: int = 256  # items per SSL batch
    ssl_sampling: SslSampling = "corpus"  # "corpus": uniform over the corpus; "training": the batch's own items
    ssl_mi_bins: int = 10  # quantile bins of numeric features for the mutual information of CFM

    # --- Dual Augmented Two-tower (Yu et al., DLP-KDD 2021); off while dat is False --------------------------------
    dat: bool = False  # augmented vectors a_u (per user id) and a_v (per item id) concatenated to the towers' inputs
    dat_query_mimic_weight: float = 0.5  # lambda1: a_u toward the positive item's embedding p_v
    dat_item_mimic_weight: float = 0.5  # lambda2: a_v toward the query's embedding p_u
    dat_category_weight: float = 0.0  # lambda3: Category Alignment Loss (0: off)
    dat_min_category_items: int = 8  # categories with fewer rows in a batch are left out of the CAL
    dat_unseen: UnseenId = "zero"  # augmented vector of a missing or unseen id: zeros, or a learned default
    dat_default_rate: float = 0.5  # share of training rows given the unseen-id vector, so the towers learn to serve
    # unseen ids (most evaluation queries come from users absent from the training period)

    # --- feature gating ---------------------------------------------------------------------------------------------
    senet: bool = False  # squeeze-excitation over the feature-field embeddings inside each tower
    senet_reduction: int = 2  # hidden width of the excitation MLP: max(1, fields // senet_reduction)

    # --- training -----------------------------------------------------------------------------------------------
    epochs: int = 6
    batch_size: int = 1024
    learning_rate: float = 3e-3
    optimizer: OptimizerName = "adamw"
    weight_decay: float = 1e-5
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    patience: int = 2  # early stopping: epochs without a better validation metric before stopping
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "adagrad"):
            raise ValueError(f"TowerConfig.optimizer {self.optimizer!r} must be 'adamw' or 'adagrad'")
        if self.temperature <= 0:
            raise ValueError(f"TowerConfig.temperature must be > 0, got {self.temperature}")
        if self.oov_buckets < 1 or self.min_count < 1:
            raise ValueError("TowerConfig.oov_buckets and TowerConfig.min_count must be >= 1")
        if self.uniform_negatives < 0 or self.batch_size < 2:
            raise ValueError("TowerConfig.uniform_negatives must be >= 0 and TowerConfig.batch_size >= 2")
        choices = {
            "main_loss": ("softmax", "bce"),
            "ssl_masking": ("random", "correlated"),
            "ssl_sampling": ("corpus", "training"),
            "dat_unseen": ("zero", "learned"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TowerConfig.{name} {getattr(self, name)!r} must be one of {allowed}")
        if self.queue_size < 0 or self.bce_negatives < 1 or self.ssl_batch_size < 2 or self.senet_reduction < 1:
            raise ValueError(
                "TowerConfig needs queue_size >= 0, bce_negatives >= 1, ssl_batch_size >= 2 and senet_reduction >= 1"
            )
        if self.queue_size > 0 and self.main_loss != "softmax":
            raise ValueError("TowerConfig.queue_size > 0 needs main_loss='softmax' (queued items are its negatives)")
        if self.ssl_weight < 0 or self.ssl_temperature <= 0 or not 0.0 <= self.ssl_dropout < 1.0:
            raise ValueError("TowerConfig needs ssl_weight >= 0, ssl_temperature > 0 and 0 <= ssl_dropout < 1")
        if min(self.dat_query_mimic_weight, self.dat_item_mimic_weight, self.dat_category_weight) < 0:
            raise ValueError("TowerConfig.dat_*_weight values must be >= 0")
        if self.ssl_mi_bins < 2 or self.dat_min_category_items < 2 or not 0.0 <= self.dat_default_rate < 1.0:
            raise ValueError(
                "TowerConfig needs ssl_mi_bins >= 2, dat_min_category_items >= 2 and 0 <= dat_default_rate < 1"
            )
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))

    @property
    def ssl_enabled(self) -> bool:
        return self.ssl_weight > 0

    @property
    def needs_corpus(self) -> bool:
        """Whether training needs the item corpus (uniform or BCE negatives, the SSL batch, CFM's information)."""
        return (
            self.uniform_negatives > 0
            or self.main_loss == "bce"
            or (self.ssl_enabled and (self.ssl_sampling == "corpus" or self.ssl_masking == "correlated"))
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_dims"] = list(self.hidden_dims)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TowerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TowerConfig has no fields {unknown}; remove them from the stored configuration")
        values = dict(data)
        if "hidden_dims" in values:
            values["hidden_dims"] = tuple(values["hidden_dims"])
        return cls(**values)

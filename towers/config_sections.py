"""The sections of ``TowerConfig`` (``towers/config.py``), one frozen dataclass each, with their range checks.

Each ``__post_init__`` validates its own fields and raises ``TowersConfigError`` naming the dotted key
(``training.epochs``) and the rule; ``towers/config.py`` assembles them, parses mappings and applies overrides.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from towers.errors import TowersConfigError

OptimizerName = Literal["adamw", "adagrad"]
CpuAutocast = Literal["off", "auto", "bf16"]
LossFunction = Literal["softmax", "bce"]
EstimatorUpdate = Literal["occurrence", "presence"]
Negatives = Literal["sampled", "full_corpus"]
SoftmaxMatmul = Literal["auto", "float32", "bfloat16"]
Masking = Literal["random", "correlated"]
SslSampling = Literal["corpus", "training"]
UnseenId = Literal["zero", "learned"]
Pooling = Literal["mean", "attention", "last"]
Positions = Literal["learned", "none"]
ItemFeatureSource = Literal["event", "corpus"]


MAX_OUTPUT_DIM = 65536  # Qdrant's largest vector size
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def config_error(key: str, problem: str) -> TowersConfigError:
    """A TowersConfigError whose ``problem`` attribute is the bare clause (``training.epochs must be >= 1, got 0``),
    for callers that say where the value came from (a file, ``--set``)."""
    error = TowersConfigError(f"TowerConfig {key} {problem}; change it in the training config.")
    error.problem = f"{key} {problem}"  # type: ignore[attr-defined]
    return error


def _require(condition: bool, key: str, rule: str, value: Any) -> None:
    if not condition:
        raise config_error(key, f"must be {rule}, got {value!r}")


@dataclass(frozen=True)
class SequenceConfig:
    """A transformer encoder over one multi-valued history feature (``towers/nn/sequence.py``), e.g. the recent items
    (most recent first). Keyed in ``encoders.sequences`` by the feature's name (``user_history__recent_items``) or its
    own name after the view prefix (``recent_items``)."""

    pooling: Pooling = "last"  # "last": the output at the most recent position; "attention": a learned query
    # attends over the outputs; "mean": the masked mean of the outputs
    layers: int = 1  # transformer encoder layers (0: positions and pooling only)
    heads: int = 2  # attention heads; towers.embedding_dim must be divisible by it
    feedforward: int = 128  # hidden width of each layer's feed-forward block
    dropout: float = 0.0  # dropout on the inputs, attention weights and residual branches (training only; its random
    # masks cost about as much as the layers on a CPU)
    positions: Positions = "learned"  # "learned": a position (recency rank) embedding per slot; "none"
    width: int | None = None  # model width of the layers (the item vectors are projected to it); None: embedding_dim
    length: int | None = None  # only the first (most recent) ``length`` slots of the list; None: all of them

    def __post_init__(self) -> None:
        _require(self.width is None or self.width >= 1, "encoders.sequences.*.width", ">= 1 or null", self.width)
        _require(self.length is None or self.length >= 1, "encoders.sequences.*.length", ">= 1 or null", self.length)
        _require(self.pooling in ("mean", "attention", "last"), "encoders.sequences.*.pooling",
                 "'mean', 'attention' or 'last'", self.pooling)
        _require(self.layers >= 0, "encoders.sequences.*.layers", ">= 0", self.layers)
        _require(self.heads >= 1, "encoders.sequences.*.heads", ">= 1", self.heads)
        _require(self.feedforward >= 1, "encoders.sequences.*.feedforward", ">= 1", self.feedforward)
        _require(0.0 <= self.dropout < 1.0, "encoders.sequences.*.dropout", "in [0, 1)", self.dropout)
        _require(self.positions in ("learned", "none"), "encoders.sequences.*.positions", "'learned' or 'none'",
                 self.positions)


Sequences = tuple[tuple[str, SequenceConfig], ...]


@dataclass(frozen=True)
class EncoderConfig:
    min_count: int = 1  # a token seen fewer times in the training data maps to the OOV id
    max_vocab_size: int | None = None  # keep the most frequent tokens of a vocabulary group (None: all)
    oov_buckets: int = 1  # > 1: out-of-vocabulary tokens are hashed (MurmurHash3) into this many buckets
    use_item_id: bool = True  # the item id column is an input of the item tower (vocab group "item_id")
    use_user_id: bool = False  # the user id column is an input of the query tower (vocab group "user_id")
    sequences: Sequences = ()  # {feature: SequenceConfig} as sorted pairs (a mapping in YAML and to_dict); a
    # multi-valued feature not named here is mean-pooled
    item_features: ItemFeatureSource = "event"  # a training row's item features: "event" = as of its event (the
    # training set's point-in-time columns); "corpus" = the corpus's, as of the fit data's cutoff, the same features
    # as corpus-drawn negatives and the served embeddings (time-varying item features then do not tell positives
    # from uniform negatives by their date)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sequences", _sequences(self.sequences, key="encoders.sequences"))
        _require(self.item_features in ("event", "corpus"), "encoders.item_features", "'event' or 'corpus'",
                 self.item_features)
        _require(self.min_count >= 1, "encoders.min_count", ">= 1", self.min_count)
        _require(self.oov_buckets >= 1, "encoders.oov_buckets", ">= 1", self.oov_buckets)
        _require(self.max_vocab_size is None or self.max_vocab_size >= 1, "encoders.max_vocab_size", ">= 1 or null",
                 self.max_vocab_size)

    def sequence_for(self, feature: str) -> SequenceConfig | None:
        """The sequence encoder of ``feature`` (keyed by its full name or its name after the last ``__``)."""
        by_name = dict(self.sequences)
        return by_name.get(feature, by_name.get(feature.rsplit("__", 1)[-1]))


@dataclass(frozen=True)
class ArchitectureConfig:
    embedding_dim: int = 64  # width of every embedding table
    hidden_dims: tuple[int, ...] = (256,)  # MLP layers of each tower before the output projection
    output_dim: int = 64  # D, the dimension of the L2-normalised tower outputs
    dropout: float = 0.0
    senet: bool = False  # squeeze-excitation over the feature-field embeddings inside each tower
    senet_reduction: int = 2  # hidden width of the excitation MLP: max(1, fields // senet_reduction)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        _require(self.embedding_dim >= 1, "towers.embedding_dim", ">= 1", self.embedding_dim)
        _require(self.output_dim >= 1, "towers.output_dim", ">= 1", self.output_dim)
        _require(self.output_dim <= MAX_OUTPUT_DIM, "towers.output_dim", f"<= {MAX_OUTPUT_DIM} (Qdrant's largest vector)",
                 self.output_dim)
        _require(all(h >= 1 for h in self.hidden_dims), "towers.hidden_dims", "a list of widths >= 1", self.hidden_dims)
        _require(0.0 <= self.dropout < 1.0, "towers.dropout", "in [0, 1)", self.dropout)
        _require(self.senet_reduction >= 1, "towers.senet_reduction", ">= 1", self.senet_reduction)


@dataclass(frozen=True)
class LossConfig:
    temperature: float = 0.05  # tau: logits are <q, v> / tau
    function: LossFunction = "softmax"  # "bce": binary cross-entropy over the positive and bce_negatives random items
    negatives: Negatives = "sampled"  # "sampled": in-batch (+ uniform, + queued) candidates, corrected by log q;
    # "full_corpus": every corpus item scored at every step (exact softmax, no sampling correction; corpora that fit)
    corpus_refresh_steps: int = 1  # full_corpus: 1 = the item tower runs over the whole corpus every step (exact
    # gradients); N > 1 = a corpus embedding table recomputed every N steps, the batch's own items fresh in it
    # (measured on the bundled data: N = 8 fell to validation R@100 .17 from .33 exact; check on validation first)
    corpus_gradient_negatives: int = 0  # full_corpus: 0 = every corpus item sends item-tower gradients; K > 0 =
    # exact values (a forward over the corpus without a graph), item gradients through the batch's items, the K/2
    # corpus items of largest gradient and K/2 drawn by gradient norm, importance-weighted (corpus_table.py);
    # with corpus_refresh_steps N > 1 the values come from a table recomputed every N steps, the positives and the
    # re-embedded rows current in it
    popularity_discount: float = 0.0  # full_corpus: beta >= 0 adds beta * log p_j (the streaming frequency
    # estimate) to the training logits, so the served score discounts popularity by beta (0: the exact softmax;
    # 1: the pointwise mutual information, as the uncorrected in-batch softmax; RetrievalTask.popularity_bias)
    category_discount: float = 0.0  # full_corpus: gamma >= 0 adds gamma * log s_c(j), the share of the training
    # occurrences of item j's category (summed from the streaming estimate over the corpus items of each category),
    # to the training logits: the served score discounts large categories by gamma (logit adjustment by category;
    # needs FeatureSchema.item_category; RetrievalTask.category_bias)
    softmax_matmul: SoftmaxMatmul = "float32"  # "bfloat16": the softmax's score and gradient matmuls (the largest
    # of a full-corpus step) take bfloat16 inputs; the softmax stays float32 (about 0.3% relative gradient error;
    # 1.4-1.7x faster at 5k-30k items on a CPU with bfloat16 instructions, ops/bench/fused_softmax.py --matmul); "auto": bfloat16
    # where the device multiplies it in hardware (AVX512-BF16 or AMX CPUs, CUDA devices that support it), else float32
    sampling_bias_correction: bool = True  # s^c = s - log q_j; False: the plain in-batch softmax
    remove_accidental_hits: bool = True
    uniform_negatives: int = 0  # B': items sampled uniformly from the corpus per batch (mixed negatives)
    bce_negatives: int = 8  # S, corpus items drawn uniformly per batch as the negatives of every row (function="bce")
    queue_size: int = 0  # > 0: a queue of this many recent item embeddings adds negatives (MoCo style); 0: off
    estimator_buckets: int = 1 << 16  # H, size of each array of the streaming frequency estimator
    estimator_hashes: int = 2  # m, number of arrays (the multi-hash variant when > 1)
    estimator_alpha: float = 0.01  # learning rate of the estimator
    estimator_update: EstimatorUpdate = "occurrence"  # "occurrence": expected copies per batch (Yi et al.);
    # "presence": the former form, P(item appears in a batch), de-duplicated per batch and capped at 1

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "loss.temperature", "> 0", self.temperature)
        _require(self.function in ("softmax", "bce"), "loss.function", "'softmax' or 'bce'", self.function)
        _require(self.uniform_negatives >= 0, "loss.uniform_negatives", ">= 0", self.uniform_negatives)
        _require(self.bce_negatives >= 1, "loss.bce_negatives", ">= 1", self.bce_negatives)
        _require(self.queue_size >= 0, "loss.queue_size", ">= 0", self.queue_size)
        _require(self.negatives in ("sampled", "full_corpus"), "loss.negatives", "'sampled' or 'full_corpus'",
                 self.negatives)
        _require(self.softmax_matmul in ("auto", "float32", "bfloat16"), "loss.softmax_matmul",
                 "'auto', 'float32' or 'bfloat16'", self.softmax_matmul)
        _require(self.corpus_refresh_steps >= 1, "loss.corpus_refresh_steps", ">= 1", self.corpus_refresh_steps)
        _require(self.corpus_gradient_negatives >= 0, "loss.corpus_gradient_negatives", ">= 0",
                 self.corpus_gradient_negatives)
        full = self.negatives == "full_corpus"
        _require(self.popularity_discount >= 0.0, "loss.popularity_discount", ">= 0", self.popularity_discount)
        _require(self.popularity_discount == 0.0 or full, "loss.popularity_discount",
                 "0 unless loss.negatives is 'full_corpus' (sampled negatives discount popularity through "
                 "loss.sampling_bias_correction)", self.popularity_discount)
        _require(self.category_discount >= 0.0, "loss.category_discount", ">= 0", self.category_discount)
        _require(self.category_discount == 0.0 or full, "loss.category_discount",
                 "0 unless loss.negatives is 'full_corpus'", self.category_discount)
        _require(self.corpus_gradient_negatives == 0 or full,
                 "loss.corpus_gradient_negatives", "0 unless loss.negatives is 'full_corpus' (a truncated backward "
                 "of the full-corpus softmax)", self.corpus_gradient_negatives)
        _require(not full or self.function == "softmax", "loss.function",
                 "'softmax' when loss.negatives is 'full_corpus'", self.function)
        _require(not full or (self.uniform_negatives == 0 and self.queue_size == 0),
                 "loss.uniform_negatives and loss.queue_size", "0 when loss.negatives is 'full_corpus' (every item is "
                 "already a candidate; set loss.negatives to 'sampled', before them, to draw negatives)",
                 (self.uniform_negatives, self.queue_size))
        _require(self.queue_size == 0 or self.function == "softmax", "loss.queue_size",
                 "0 unless loss.function is 'softmax' (queued items are its negatives)", self.queue_size)
        _require(self.estimator_buckets >= 1 and self.estimator_hashes >= 1, "loss.estimator_buckets and hashes",
                 ">= 1", (self.estimator_buckets, self.estimator_hashes))
        _require(0.0 < self.estimator_alpha <= 1.0, "loss.estimator_alpha", "in (0, 1]", self.estimator_alpha)


@dataclass(frozen=True)
class SslConfig:
    """The self-supervised auxiliary loss (Yao et al., CIKM 2021); off while ``weight == 0``."""

    weight: float = 0.0  # alpha in L = L_main + alpha * L_self
    masking: Masking = "random"  # "random" (RFM) or "correlated" (CFM, by mutual information of item features)
    temperature: float = 0.1  # tau of the InfoNCE over the two views
    value_dropout: float = 0.1  # share of the values of multi-valued item features dropped in each view
    sample_size: int = 256  # items per SSL batch
    sampling: SslSampling = "corpus"  # "corpus": uniform over the corpus; "training": the batch's own items
    mi_bins: int = 10  # quantile bins of numeric features for the mutual information of CFM

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "ssl.weight", ">= 0", self.weight)
        _require(self.masking in ("random", "correlated"), "ssl.masking", "'random' or 'correlated'", self.masking)
        _require(self.temperature > 0, "ssl.temperature", "> 0", self.temperature)
        _require(0.0 <= self.value_dropout < 1.0, "ssl.value_dropout", "in [0, 1)", self.value_dropout)
        _require(self.sample_size >= 2, "ssl.sample_size", ">= 2", self.sample_size)
        _require(self.sampling in ("corpus", "training"), "ssl.sampling", "'corpus' or 'training'", self.sampling)
        _require(self.mi_bins >= 2, "ssl.mi_bins", ">= 2", self.mi_bins)

    @property
    def enabled(self) -> bool:
        return self.weight > 0


@dataclass(frozen=True)
class DatConfig:
    """The Dual Augmented Two-tower model (Yu et al., DLP-KDD 2021); off while ``enabled`` is false."""

    enabled: bool = False  # augmented vectors a_u (per user id) and a_v (per item id) concatenated to the towers' inputs
    query_mimic_weight: float = 0.5  # lambda1: a_u toward the positive item's embedding p_v
    item_mimic_weight: float = 0.5  # lambda2: a_v toward the query's embedding p_u
    category_weight: float = 0.0  # lambda3: Category Alignment Loss (0: off)
    min_category_items: int = 8  # categories with fewer rows in a batch are left out of the CAL
    unseen: UnseenId = "zero"  # augmented vector of a missing or unseen id: zeros, or a learned default
    default_rate: float = 0.5  # share of training rows given the unseen-id vector, so the towers learn to serve
    # unseen ids (most evaluation queries come from users absent from the training period)

    def __post_init__(self) -> None:
        weights = (self.query_mimic_weight, self.item_mimic_weight, self.category_weight)
        _require(min(weights) >= 0, "dat.*_weight", ">= 0", weights)
        _require(self.min_category_items >= 2, "dat.min_category_items", ">= 2", self.min_category_items)
        _require(self.unseen in ("zero", "learned"), "dat.unseen", "'zero' or 'learned'", self.unseen)
        _require(0.0 <= self.default_rate < 1.0, "dat.default_rate", "in [0, 1)", self.default_rate)


@dataclass(frozen=True)
class TrainerConfig:
    """How the trainer runs; it knows nothing of the model (``towers/training/trainer.py``)."""

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
    progress: bool = True  # a progress bar on stderr
    autocast_bf16: bool = True  # bf16 autocast when training on CUDA
    cpu_autocast: CpuAutocast = "off"  # bf16 autocast when training on a CPU: "auto" where the CPU multiplies bf16
    #                                  in hardware (AVX512-BF16 or AMX; towers.losses.fused.fast_bfloat16), float32 on
    #                                  others; "bf16" on any CPU (emulated, slower, where it has no such hardware).
    #                                  The losses and the DAT covariances stay float32 either way
    log_every: int = 10  # steps between progress-bar refreshes (each refresh syncs the device)
    sparse_embeddings: bool = False  # row-sparse gradients for the embedding tables, updated lazily
    #                                  (towers/training/sparse.py): per-step cost independent of the vocabularies
    retain_freed_memory: bool = True  # on the CPU, keep freed memory for the next step instead of page-faulting
    #                                  fresh pages every step (glibc; towers/training/allocator.py)

    def __post_init__(self) -> None:
        _require(self.optimizer in ("adamw", "adagrad"), "training.optimizer", "'adamw' or 'adagrad'", self.optimizer)
        _require(self.cpu_autocast in ("off", "auto", "bf16"), "training.cpu_autocast", "'off', 'auto' or 'bf16'",
                 self.cpu_autocast)
        _require(self.epochs >= 1, "training.epochs", ">= 1", self.epochs)
        _require(self.batch_size >= 2, "training.batch_size", ">= 2", self.batch_size)
        _require(self.learning_rate > 0, "training.learning_rate", "> 0", self.learning_rate)
        _require(self.weight_decay >= 0, "training.weight_decay", ">= 0", self.weight_decay)
        _require(self.grad_clip is None or self.grad_clip > 0, "training.grad_clip", "> 0 or null", self.grad_clip)
        _require(self.seed >= 0, "training.seed", ">= 0", self.seed)
        _require(_DEVICE.fullmatch(self.device) is not None, "training.device", "auto, cpu, mps, cuda or cuda:N",
                 self.device)
        _require(self.patience >= 1, "training.patience", ">= 1", self.patience)
        _require(self.max_steps is None or self.max_steps >= 1, "training.max_steps", ">= 1 or null", self.max_steps)
        _require(self.log_every >= 1, "training.log_every", ">= 1", self.log_every)


def parse_section(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TowersConfigError(
            f"TowerConfig section {section!r} has no key {', '.join(map(repr, unknown))}; its keys are {names}."
        )
    checked = {name: _checked(value, hints[name], key=f"{section}.{name}") for name, value in values.items()}
    return cls(**checked)


def _sequences(value: Any, *, key: str) -> Sequences:
    """A mapping {feature: {pooling: ..., layers: ...}} (or pairs, or SequenceConfig values) -> sorted pairs."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple) and all(isinstance(v, list | tuple) and len(v) == 2 for v in value):
        items = [tuple(v) for v in value]
    else:
        raise TowersConfigError(
            f"TowerConfig {key} must be a mapping of feature name to sequence settings, got {value!r} "
            "(e.g. {recent_items: {pooling: last, layers: 1}})."
        )
    pairs: list[tuple[str, SequenceConfig]] = []
    for name, settings in items:
        if not isinstance(name, str) or not name:
            raise TowersConfigError(f"TowerConfig {key} needs feature names as keys, got {name!r}.")
        if isinstance(settings, SequenceConfig):
            pairs.append((name, settings))
            continue
        if settings is None:
            settings = {}
        if not isinstance(settings, Mapping):
            raise TowersConfigError(f"TowerConfig {key}.{name} must be a mapping of settings, got {settings!r}.")
        pairs.append((name, parse_section(SequenceConfig, f"{key}.{name}", settings)))
    return tuple(sorted(pairs, key=lambda pair: pair[0]))


def _checked(value: Any, hint: Any, *, key: str) -> Any:
    """``value`` as the annotated type (ints accepted for floats, lists for tuples), else TowersConfigError."""
    if key == "encoders.sequences":
        return _sequences(value, key=key)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _checked(value, inner[0], key=key)
    if origin is Literal:
        if value not in args:
            raise config_error(key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise config_error(key, f"must be a list, got {value!r} (e.g. [256, 128])")
        return tuple(_checked(v, args[0], key=key) for v in value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise config_error(key, f"must be a finite number, got {value!r}")
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field above is one of these
        ok = True
    if not ok:
        article = "an" if hint.__name__[0] in "aeiou" else "a"
        raise config_error(key, f"must be {article} {hint.__name__}, got {value!r}")
    return value

"""The config that rebuilds a two-tower model and says how to train it, one small dataclass per section.

    TowerConfig
      encoders  EncoderConfig       vocabularies: min_count, max_vocab_size, oov_buckets, use_item_id, use_user_id;
                                    sequences: {feature: SequenceConfig} (a transformer over a history list)
      towers    ArchitectureConfig  embedding_dim, hidden_dims, output_dim, dropout, senet, senet_reduction
      loss      LossConfig          temperature, function, correction, negatives, queue, frequency estimator
      ssl       SslConfig           self-supervised auxiliary loss (off while weight == 0)
      dat       DatConfig           Dual Augmented Two-tower (off while enabled is false)
      training  TrainerConfig       the trainer's knobs (epochs, batch_size, optimizer, seed, device, ...)

The sections and their parsing live in ``towers/config_sections.py``; this module assembles them.

A dataset YAML's ``training:`` section mirrors this tree (``loss: {temperature: 0.05}``); ``TowerConfig.from_dict``
validates it (unknown keys, wrong types, out-of-range values raise ``TowersConfigError`` naming the key and the valid
ones). ``with_overrides`` takes dotted keys (``training.epochs``) or an unambiguous field name (``epochs``). A
checkpoint stores ``to_dict()`` next to the encoders; ``from_dict`` plus the encoders rebuild the model exactly
(like nanoGPT's ``GPTConfig(**checkpoint["model_args"])``). Defaults train well on the bundled MovieLens data in about
a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from towers.config_sections import (
    ArchitectureConfig,
    DatConfig,
    EncoderConfig,
    LossConfig,
    SequenceConfig,
    SslConfig,
    TrainerConfig,
    parse_section,
)
from towers.errors import TowersConfigError


SECTIONS: dict[str, type] = {
    "encoders": EncoderConfig,
    "towers": ArchitectureConfig,
    "loss": LossConfig,
    "ssl": SslConfig,
    "dat": DatConfig,
    "training": TrainerConfig,
}


@dataclass(frozen=True)
class TowerConfig:
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    towers: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ssl: SslConfig = field(default_factory=SslConfig)
    dat: DatConfig = field(default_factory=DatConfig)
    training: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TowersConfigError(f"TowerConfig.{name} must be a {cls.__name__}; build it with from_dict().")

    @property
    def needs_corpus(self) -> bool:
        """Whether training needs the item corpus (full-corpus, uniform or BCE negatives, the SSL batch, CFM's
        information)."""
        return (
            self.loss.uniform_negatives > 0
            or self.loss.function == "bce"
            or self.loss.negatives == "full_corpus"
            or (self.ssl.enabled and (self.ssl.sampling == "corpus" or self.ssl.masking == "correlated"))
        )

    # --- dictionaries (YAML, checkpoints) ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        data = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        data["towers"]["hidden_dims"] = list(self.towers.hidden_dims)
        data["encoders"]["sequences"] = {name: dataclasses.asdict(c) for name, c in self.encoders.sequences}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TowerConfig:
        """A nested mapping (missing sections and keys take their defaults) -> TowerConfig; raises TowersConfigError
        on an unknown section or key, a value of the wrong type or out of range."""
        if not isinstance(data, Mapping):
            raise TowersConfigError(f"TowerConfig needs a mapping of sections {sorted(SECTIONS)}, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise TowersConfigError(
                f"TowerConfig has no section {', '.join(map(repr, unknown))}; the sections are {sorted(SECTIONS)} "
                f"(e.g. 'training: {{epochs: 3}}'; every key: {', '.join(leaf_keys())})."
            )
        sections: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name) or {}
            if not isinstance(values, Mapping):
                raise TowersConfigError(f"TowerConfig section {name!r} must be a mapping, got {values!r}.")
            sections[name] = parse_section(section_cls, name, values)
        return cls(**sections)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TowerConfig:
        """This config with values replaced: keys are dotted (``training.epochs``) or an unambiguous field name
        (``epochs``); raises TowersConfigError on an unknown or ambiguous key, naming the valid ones."""
        data = self.to_dict()
        for key, value in overrides.items():
            section, name = resolve_key(key)
            data[section][name] = value
        return TowerConfig.from_dict(data)


def leaf_keys() -> list[str]:
    """Every settable key, dotted: ``encoders.min_count``, ..., ``training.log_every``."""
    return [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)]


def resolve_key(key: str) -> tuple[str, str]:
    """``training.epochs`` or ``epochs`` -> ("training", "epochs"); unknown or ambiguous keys raise."""
    keys = leaf_keys()
    if key in keys:
        section, name = key.split(".", 1)
        return section, name
    matches = [k for k in keys if k.split(".", 1)[1] == key]
    if len(matches) == 1:
        section, name = matches[0].split(".", 1)
        return section, name
    if matches:
        raise TowersConfigError(f"Training setting {key!r} is ambiguous; use one of {', '.join(matches)}.")
    import difflib

    close = difflib.get_close_matches(key, [*keys, *(k.split(".", 1)[1] for k in keys)], n=3)
    hint = f" (closest: {', '.join(close)})" if close else ""
    raise TowersConfigError(f"Training setting {key!r} does not exist; the valid keys are {', '.join(keys)}{hint}.")



__all__ = [
    "ArchitectureConfig",
    "DatConfig",
    "EncoderConfig",
    "LossConfig",
    "SECTIONS",
    "SequenceConfig",
    "SslConfig",
    "TowerConfig",
    "TrainerConfig",
    "leaf_keys",
    "resolve_key",
]

"""The search space of ``towerctl tune``: which training settings a study varies, and over which values.

A space maps training-setting keys (dotted, ``training.learning_rate``, or an unambiguous field name,
``learning_rate``: the keys of ``towers.config.TowerConfig``) to one parameter each:

    training.learning_rate: {type: float, low: 0.0003, high: 0.01, log: true}
    training.epochs:        {type: int, low: 2, high: 8}
    towers.output_dim:      {type: categorical, choices: [32, 64, 128]}

``--space FILE`` gives a YAML file holding such a mapping (optionally under a top-level ``space:`` key); it replaces
the default space. Every key is checked against TowerConfig, and every bound or choice must itself be a valid value
of that key on the base config, before any trial starts. The default (``default_space``): learning rate,
temperature, embedding and output dimensions, weight decay, the epochs budget and the number of uniform negatives
(only with sampled negatives: the full-corpus softmax takes none), plus the SSL weight when the config switches SSL on and the DAT weights when it switches DAT on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from tower_platform.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from towers.config import TowerConfig

SPACE_SECTION = "space"


class _Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParameter(_Parameter):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> FloatParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be smaller than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs low > 0, got {self.low:g}")
        return self

    def bounds(self) -> list[Any]:
        return [self.low, self.high]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class IntParameter(_Parameter):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParameter:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log-scaled int range needs low > 0 and step 1")
        return self

    def bounds(self) -> list[Any]:
        return [self.low, self.high]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class CategoricalParameter(_Parameter):
    type: Literal["categorical"]
    choices: list[bool | int | float | str | None] = Field(min_length=1)

    def bounds(self) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


Parameter = Annotated[FloatParameter | IntParameter | CategoricalParameter, Field(discriminator="type")]
_PARAMETER = TypeAdapter(Parameter)


class SearchSpace:
    """Dotted training-setting keys -> parameters, checked against a base TowerConfig."""

    def __init__(self, parameters: dict[str, FloatParameter | IntParameter | CategoricalParameter]) -> None:
        if not parameters:
            raise ConfigError("The search space is empty; give at least one key, e.g. 'training.learning_rate: "
                              "{type: float, low: 0.0003, high: 0.01, log: true}'.")
        self.parameters = dict(parameters)

    @classmethod
    def from_mapping(cls, raw: Any, *, where: str) -> SearchSpace:
        """A mapping of keys to parameter mappings; keys resolved against TowerConfig (unknown keys name the valid
        ones), parameters validated; problems raise one ConfigError naming ``where`` and the key."""
        from towers.config import leaf_keys, resolve_key
        from towers.errors import TowersConfigError

        if isinstance(raw, dict) and set(raw) == {SPACE_SECTION}:
            raw = raw[SPACE_SECTION]
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a search space is a mapping of training keys to parameters, e.g. "
                              "'training.epochs: {type: int, low: 2, high: 8}'.")
        parameters: dict[str, Any] = {}
        for key, spec in raw.items():
            try:
                section, name = resolve_key(str(key))
            except TowersConfigError:
                raise ConfigError(f"{where}: key {key!r} is not a training setting; the valid keys are "
                                  f"{', '.join(leaf_keys())}.") from None
            dotted = f"{section}.{name}"
            if dotted in parameters:
                raise ConfigError(f"{where}: key {key!r} names {dotted} a second time; keep one of them.")
            try:
                parameters[dotted] = _PARAMETER.validate_python(spec)
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join(str(p) for p in error["loc"])
                detail = str(error["msg"]).removeprefix("Value error, ")
                raise ConfigError(
                    f"{where}: key {key!r}{'.' + field if field else ''}: {detail}; a parameter is "
                    "{type: float|int, low, high, log} or {type: categorical, choices: [...]}."
                ) from None
        return cls(parameters)

    @classmethod
    def from_file(cls, path: Path) -> SearchSpace:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Search space {path} does not exist; pass an existing YAML file with --space.")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Search space {path} is not valid YAML ({exc}); fix the file's syntax.") from exc
        return cls.from_mapping(raw, where=f"Search space {path}")

    def check_against(self, base: TowerConfig, *, where: str) -> None:
        """Every bound and choice must give a valid TowerConfig on ``base``; else a ConfigError naming the key."""
        from towers.errors import TowersConfigError

        for key, parameter in self.parameters.items():
            for value in parameter.bounds():
                try:
                    base.with_overrides({key: value})
                except TowersConfigError as exc:
                    raise ConfigError(f"{where}: key {key!r} value {value!r} is not valid on this config: {exc}") from None

    def base_point(self, base: TowerConfig) -> dict[str, Any]:
        """The base config's own value of each key the space can propose (keys whose value lies outside are left
        out, and the sampler draws them): the first trial of a new study, so tuning never reports a best worse than
        the config it started from."""
        from towers.config import resolve_key

        values = base.to_dict()
        point: dict[str, Any] = {}
        for key, parameter in self.parameters.items():
            section, name = resolve_key(key)
            value = values[section][name]
            if isinstance(parameter, CategoricalParameter):
                inside = value in parameter.choices
            elif isinstance(parameter, IntParameter):
                inside = (isinstance(value, int) and not isinstance(value, bool)
                          and parameter.low <= value <= parameter.high and (value - parameter.low) % parameter.step == 0)
            else:
                inside = isinstance(value, int | float) and not isinstance(value, bool) and parameter.low <= value <= parameter.high
            if inside:
                point[key] = value
        return point

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One value per key from an Optuna trial (parameter names are the dotted keys)."""
        return {key: parameter.suggest(trial, key) for key, parameter in self.parameters.items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {key: parameter.model_dump() for key, parameter in self.parameters.items()}

    def fingerprint(self, base: TowerConfig) -> str:
        """sha256 of the base config and the space: a study is resumed only with both unchanged."""
        text = json.dumps({"base": base.to_dict(), "space": self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_space(base: TowerConfig) -> SearchSpace:
    """The default search space for ``base`` (see the module doc)."""
    parameters: dict[str, Any] = {
        "training.learning_rate": FloatParameter(type="float", low=3e-4, high=1e-2, log=True),
        "loss.temperature": FloatParameter(type="float", low=0.02, high=0.2, log=True),
        "towers.embedding_dim": CategoricalParameter(type="categorical", choices=[32, 64, 128]),
        "towers.output_dim": CategoricalParameter(type="categorical", choices=[32, 64, 128]),
        "training.weight_decay": FloatParameter(type="float", low=1e-7, high=1e-3, log=True),
        "training.epochs": IntParameter(type="int", low=2, high=8),
    }
    if base.loss.negatives == "sampled":  # the full-corpus softmax already scores every item: no uniform draws
        parameters["loss.uniform_negatives"] = CategoricalParameter(type="categorical", choices=[0, 128, 256, 512])
    if base.ssl.enabled:
        parameters["ssl.weight"] = FloatParameter(type="float", low=0.1, high=3.0, log=True)
    if base.dat.enabled:
        parameters["dat.query_mimic_weight"] = FloatParameter(type="float", low=0.05, high=2.0, log=True)
        parameters["dat.item_mimic_weight"] = FloatParameter(type="float", low=0.05, high=2.0, log=True)
        if base.dat.category_weight > 0:
            parameters["dat.category_weight"] = FloatParameter(type="float", low=1.0, high=300.0, log=True)
    return SearchSpace(parameters)

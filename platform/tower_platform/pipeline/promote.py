"""Promote a freshly indexed version behind the alignment gates (the ``--promote`` step of the main job)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tower_platform.pipeline.train import Echo, quiet

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.points import VectorStore


def promote_gated(
    registry: SqlRegistryStore,
    vectors: VectorStore,
    *,
    model: str,
    version: int,
    inputs: Any,
    monitor_section: Any,
    monitor_config: Path | None,
    actor: str,
    reason: str,
    force: bool = False,
    echo: Echo = quiet,
    on_report: Callable[[Any], None] = lambda _report: None,
) -> Any:
    """Measure the version with the alignment gates (thresholds from the dataset's ``monitor`` section or
    ``monitor_config``) and promote it when they pass, or when ``force`` is given."""
    from tower_platform.monitor.gate import AlignmentGate
    from tower_platform.monitor.thresholds import load_thresholds
    from tower_platform.registry.promotion import promote

    gate = AlignmentGate(
        registry, vectors, actor=actor, inputs=inputs, echo=echo,
        thresholds=load_thresholds(dataset_section=monitor_section, path=monitor_config),
        on_report=on_report,
    )
    return promote(registry, vectors, model, version, actor=actor, reason=reason, gate=gate, force=force)

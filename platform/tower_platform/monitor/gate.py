"""The alignment gate of a promotion: the candidate's report against production, judged by the thresholds.

``AlignmentGate`` is a :class:`tower_platform.registry.promotion.PromotionGate`::

    gate = AlignmentGate(registry, vectors, thresholds=thresholds, actor="ops", on_report=print_report)
    promote(registry, vectors, "movies", 2, actor="ops", gate=gate)                     # refused on a breach
    promote(registry, vectors, "movies", 2, actor="ops", gate=gate, force=True, reason="known regression")

It reuses the candidate's latest stored report when that report was compared with the current production version
and used the same K and pooling minimums (breaches are re-judged with the current thresholds; a report stored before
pooling and the bounded distance existed is measured again); otherwise it runs
the report (and stores it). The verdict carries every breach (worst first within each check) for the audit event,
and a summary for the refusal: the counts, the first ``worst`` breaches and the command that shows the full list. The test queries come from ``inputs`` when given (``towerctl run`` has them in memory), else from the
candidate's artifact folder (``monitor/*.parquet``). A version that cannot be measured (no test queries) passes with
a note in the audit event, unless ``require_report`` is set. With ``record=False`` (a dry run) a fresh report is
judged but not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tower_platform.errors import ConflictError
from tower_platform.monitor.inputs import MonitorInputs
from tower_platform.monitor.summary import summarise
from tower_platform.monitor.thresholds import MonitorThresholds
from tower_platform.monitor.version_report import build_alignment_report
from tower_platform.registry.entities import AlignmentReport, ModelVersion
from tower_platform.registry.promotion import GateVerdict

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.store import QdrantVectorStore

GATE_NAME = "alignment"


def artifact_folder(version: ModelVersion) -> Path:
    return Path(version.artifact("query.onnx").path).parent


class AlignmentGate:
    def __init__(
        self,
        registry: SqlRegistryStore,
        vectors: QdrantVectorStore,
        *,
        thresholds: MonitorThresholds,
        actor: str,
        inputs: MonitorInputs | None = None,
        on_report: Callable[[AlignmentReport], None] | None = None,
        echo: Callable[[str], None] = lambda _line: None,
        record: bool = True,
    ) -> None:
        self.registry = registry
        self.vectors = vectors
        self.thresholds = thresholds
        self.actor = actor
        self.inputs = inputs
        self.on_report = on_report
        self.echo = echo
        self.record = record
        self.report: AlignmentReport | None = None  # the report behind the last verdict

    def __call__(self, candidate: ModelVersion, production: ModelVersion | None) -> GateVerdict:
        against = production.version if production is not None and production.version != candidate.version else None
        report = self._stored(candidate, against)
        if report is None:
            inputs = self._inputs(candidate)
            if inputs is None:
                return GateVerdict(GATE_NAME, (), {"measured": False,
                                                   "note": "no test queries in the artifact folder"})
            report = build_alignment_report(
                self.registry, self.vectors, model=candidate.model, version=candidate.version, inputs=inputs,
                thresholds=self.thresholds, actor=self.actor, against=against, echo=self.echo, record=self.record,
            )
        self.report = report
        if self.on_report is not None:
            self.on_report(report)
        summary = summarise(report.segments, self.thresholds)
        full_list = f"`towerctl monitor alignment {report.model} --version {report.version} --run {report.run} --json`"
        return GateVerdict(
            GATE_NAME,
            tuple(b.to_dict() for b in summary.breaches),
            {"measured": True, "report_run": report.run or None, "against_version": report.against_version,
             "categories": summary.n_categories, "gated": summary.n_gated, "pooled": summary.n_pooled},
            summary=f"{summary.breach_sentence()}; {summary.counts_sentence()}; the full list: {full_list}",
            listing=tuple(b.message for b in summary.listed()),
        )

    def _stored(self, candidate: ModelVersion, against: int | None) -> AlignmentReport | None:
        if self.inputs is not None:  # fresh test queries were handed over: measure on them
            return None
        reports = self.registry.alignment_reports(candidate.model, version=candidate.version)
        current = self.thresholds.to_dict()
        matching = [r for r in reports if r.against_version == against and r.k == self.thresholds.k
                    and set(current) <= set(r.thresholds)  # older reports: another distance scale, no pooling
                    and all(r.thresholds[key] == value for key, value in self.thresholds.pooling().items())]
        return matching[-1] if matching else None

    def _inputs(self, candidate: ModelVersion) -> MonitorInputs | None:
        if self.inputs is not None:
            return self.inputs
        folder = artifact_folder(candidate)
        if MonitorInputs.exists(folder):
            return MonitorInputs.read(folder)
        if self.thresholds.require_report:
            raise ConflictError(
                f"Model '{candidate.model}' version {candidate.version} has no test queries in {folder / 'monitor'} "
                f"and the monitor requires a report; run `towerctl monitor alignment {candidate.model} --version "
                f"{candidate.version} --training-set FILE` first."
            )
        self.echo(f"{candidate.model} v{candidate.version}: no test queries in {folder}; alignment gate not measured")
        return None

"""Category-alignment monitoring and promotion gates.

    alignment.py       pure figures: exact chunked top-K, per-segment covariance (CAL distance), norms, Recall@K,
                       NDCG@K, coverage, interaction share, by category and by popularity bucket
    inputs.py          MonitorInputs: a version's test queries and interaction log (parquet beside its artifacts)
    thresholds.py      MonitorThresholds (defaults, dataset config ``monitor`` section, TOWER_MONITOR_CONFIG) and
                       the breaches a report makes
    version_report.py  the report of a registered version: its collection + query.onnx, compared with production,
                       stored in the registry
    gate.py            AlignmentGate: the gate ``registry.promotion.promote(..., gate=...)`` asks before promoting
    plot.py            the PNG of a report (per-category Recall@K side by side, alignment distance per category)
"""

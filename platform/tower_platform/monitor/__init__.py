"""Category-alignment monitoring and promotion gates, at any number of categories.

    exact_top_k.py     exact chunked top-K over every item: a bfloat16 screen with a proven error bound, exact
                       rescoring of the candidates, a running top-K (never a queries x items matrix)
    covariance.py      per-segment mean and covariance, the CAL distance and the bounded relative distance in [0, 1]
    alignment.py       pure figures: norms, Recall@K, NDCG@K, coverage, interaction share, by category, popularity
                       bucket and the pooled "small categories" segment
    inputs.py          MonitorInputs: a version's test queries and interaction log (parquet beside its artifacts)
    thresholds.py      MonitorThresholds (defaults, dataset config ``monitor`` section, TOWER_MONITOR_CONFIG), the
                       pooling rule and the breaches a report makes (a recall drop needs statistical support)
    summary.py         counts, the worst N segments per check, the breaches worth listing
    version_report.py  the report of a registered version: its collection + query.onnx, compared with production,
                       stored in the registry
    gate.py            AlignmentGate: the gate ``registry.promotion.promote(..., gate=...)`` asks before promoting
    plot.py            the PNG of a report: the worst N and the distribution of all, one fixed size
"""

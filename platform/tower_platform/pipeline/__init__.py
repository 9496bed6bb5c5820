"""The steps of the main job as plain functions, shared by the CLI commands and ``towerctl run``.

    ingest -> feast apply + materialize -> training set (audited) -> train (early stop on validation) -> refit on
    train + validation -> evaluate (next-item protocol) -> export ONNX towers + spec.json -> register -> write item
    vectors -> verify -> promote -> recommend

One module per step: :mod:`.config` (the dataset YAML's training section), :mod:`.train`, :mod:`.export` (the
``spec.json`` format), :mod:`.register`, :mod:`.index`, :mod:`.promote`, :mod:`.recommend` and :mod:`.run` (the whole
job). Each function takes what it needs as parameters (no settings are read here) and returns a frozen result.
"""

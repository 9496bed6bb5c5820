"""The SQL registry of model versions: tables, migrations driver, store, promotion.

    schema.py          ORM tables (rows never leave the store) with a constraint naming convention
    entities.py        frozen dataclasses handed to callers
    database.py        engine creation (psycopg 3 / SQLite transaction modes) and driver-error translation
    migration.py       Alembic driven from code (packaged ``migrations/``), schema-at-head check
    store.py           SqlRegistryStore: models, versions, collections, audit log, locked_model()
    unit_of_work.py    one model's rows inside one transaction
    artifact.py        sha256 of artifacts, checked against the registry
    exported_model.py  an export folder (query.onnx, item.onnx, spec.json) read for registration
    promotion.py       promote / rollback / gc: a registry transaction paired with one Qdrant alias move
"""

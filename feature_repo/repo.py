"""The repository's Feast objects as module attributes, for the plain ``feast apply`` CLI.

Run from this folder with ``TOWER_HOME`` set (``TOWER_HOME=/abs/path feast apply``) after ``towerctl data ingest``.
``towerctl features apply`` does the same without this module.
"""

import os
from pathlib import Path

from tower_platform.datasets import layout
from tower_platform.datasets.feast_definitions import build_definitions

_definitions = build_definitions(Path(os.environ.get("TOWER_HOME", ".tower")))

user = _definitions.entities[0]
item = _definitions.entities[1]
user_history = _definitions.views.get(layout.USER_HISTORY)
user_profile = _definitions.views.get(layout.USER_PROFILE)
item_profile = _definitions.views.get(layout.ITEM_PROFILE)
item_stats = _definitions.views.get(layout.ITEM_STATS)
query_features = _definitions.services.get(layout.QUERY_SERVICE)
item_features = _definitions.services.get(layout.ITEM_SERVICE)

"""``towerctl``: the admin CLI. :mod:`.main` builds the root app and adds one sub-app per noun; :mod:`.context`
builds the clients (registry, feature store, vector store) the commands share."""

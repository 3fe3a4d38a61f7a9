"""Matrix: the one account podod uses on a homeserver (``matrix:`` in podod.yaml), its
session and sync loop (:mod:`podod.matrix.session`), shared by the admin bot
(:mod:`podod.frontends.matrix`) and the Matrix alert notifier."""

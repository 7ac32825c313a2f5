"""Training code: produces what the runtime loads; the runtime never imports it."""

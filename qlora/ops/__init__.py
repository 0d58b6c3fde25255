"""Operator tools: what serves now (from the router), `qlora status`, `qlora chat`, `qlora new-domain`."""

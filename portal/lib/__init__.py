"""Helpers every layer may use (encryption, redaction, logging, tracing, the clock, the
environment readers, middleware, admin mixins). They import nothing from portal's apps
or the integration (tests/test_import_graph.py)."""

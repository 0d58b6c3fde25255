"""qlora-platform: the library code and Dagster assets for the weekly QLoRA adapter cycle.

Package ``__init__`` files stay empty on purpose: the training entrypoint
(``qlora.training.entrypoint``) must import without dagster, duckdb or
pandera, because it runs on GPU hosts that carry only the training stack.
"""

"""Experiment tracking: one run per training run (params, curves, speed, memory, cost, eval metrics),
each adapter a registered model version whose `serving` alias follows the router. MLflow by
default (a local store under QLORA_HOME), a server by MLFLOW_TRACKING_URI, or nothing."""

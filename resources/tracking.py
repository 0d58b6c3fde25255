"""Dagster resource ``tracking``: the experiment tracker runs are reported to.

One interface, two implementations (as the serving resource): MLflow (a local store under
QLORA_HOME unless ``tracking_uri`` or MLFLOW_TRACKING_URI names a server) and none. Another
tracker (W&B) is one more subclass whose ``tracker()`` returns an object with the three
methods of ``qlora.tracking.base.Tracker``.
"""
from __future__ import annotations

from abc import abstractmethod

import dagster as dg
from pydantic import Field

from qlora.tracking.base import NoTracker, Tracker


class TrackingResource(dg.ConfigurableResource):
    @abstractmethod
    def tracker(self) -> Tracker:
        """The tracker to report training runs, eval metrics and serving aliases to."""


class MlflowTrackingResource(TrackingResource):
    tracking_uri: str = Field(default="", description="'' = $MLFLOW_TRACKING_URI, else sqlite under QLORA_HOME/mlflow")

    def tracker(self) -> Tracker:
        from qlora.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker(self.tracking_uri or None)


class NoTrackingResource(TrackingResource):
    def tracker(self) -> Tracker:
        return NoTracker()

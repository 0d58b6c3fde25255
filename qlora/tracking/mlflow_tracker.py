"""MLflow as the experiment tracker: a local store under QLORA_HOME by default, a server by URI.

Per domain, one experiment (`qlora-<domain>`) and one registered model (`qlora-<domain>`):
each training run is an MLflow run (params = the resolved config, per-step loss and learning
rate, tokens/s, memory, cost, later the candidate's eval metrics), tagged with the Dagster run
id and the adapter version; each adapter version is a model version whose source is the
adapter folder, and the alias `serving` (plus `canary` during a split) follows the router.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from qlora.core.paths import paths
from qlora.tracking.base import TrainingRecord

SERVING_ALIAS = "serving"
CANARY_ALIAS = "canary"
VERSION_TAG = "qlora.adapter_version"
_BATCH = 100  # MLflow's per-call limit on params (metrics allow 1000)
_MAX_PARAM = 6000


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set (a server, or any store MLflow accepts), else the local store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths().home / 'mlflow' / 'mlflow.db'}"


def _name(domain: str) -> str:
    return f"qlora-{domain}"


class MlflowTracker:
    def __init__(self, tracking_uri: str | None = None, artifact_root: str | Path | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Artifacts next to a local store; a server picks its own (artifact_root None).
        local = self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri
        self.artifact_root = Path(artifact_root) if artifact_root else (paths().home / "mlflow" / "artifacts"
                                                                        if local else None)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # -- experiments and runs ------------------------------------------------------------------
    def experiment_id(self, domain: str) -> str:
        found = self.client.get_experiment_by_name(_name(domain))
        if found:
            return found.experiment_id
        location = (self.artifact_root / _name(domain)).as_uri() if self.artifact_root else None
        return self.client.create_experiment(_name(domain), artifact_location=location,
                                             tags={"qlora.domain": domain})

    def run_of(self, domain: str, version: str):
        runs = self.client.search_runs([self.experiment_id(domain)],
                                       filter_string=f"tags.`{VERSION_TAG}` = '{version}'", max_results=1)
        return runs[0] if runs else None

    def log_training(self, record: TrainingRecord) -> str | None:
        existing = self.run_of(record.domain, record.version)
        if existing:
            self._register(record, existing.info.run_id)
            return existing.info.run_id
        started, ended = record.span_ms()
        run = self.client.create_run(
            self.experiment_id(record.domain), run_name=f"{record.domain}@{record.version}", start_time=started,
            tags={VERSION_TAG: record.version, "qlora.domain": record.domain, "dagster.run_id": record.dagster_run_id,
                  "qlora.data_version": str(record.manifest.get("data_version", "")),
                  "qlora.adapter_path": record.adapter_path, "mlflow.source.name": "dagster: qlora_adapter"},
        )
        run_id = run.info.run_id
        now = ended or int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, points in record.curves().items() for step, value in points]
        metrics += [Metric(key, value, now, 0) for key, value in record.summary().items()]
        params = [Param(key[:250], value[:_MAX_PARAM]) for key, value in record.params().items()]
        for start in range(0, max(len(params), 1), _BATCH):
            self.client.log_batch(run_id, params=params[start:start + _BATCH])
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
        if self.artifact_root:  # a server without artifact proxying may refuse; the record is in the params
            self.client.log_dict(run_id, record.manifest, "manifest.json")
        self.client.set_terminated(run_id, "FINISHED", end_time=ended)
        self._register(record, run_id)
        return run_id

    def log_eval(self, domain: str, version: str, metrics: dict[str, float], dagster_run_id: str = "") -> bool:
        run = self.run_of(domain, version)
        if run is None:
            return False
        now = int(time.time() * 1000)
        self.client.log_batch(run.info.run_id, metrics=[Metric(f"eval/{k}", float(v), now, 0) for k, v in metrics.items()],
                              tags=[RunTag("qlora.eval_dagster_run_id", dagster_run_id)])
        return True

    # -- the registry ----------------------------------------------------------------------------
    def _register(self, record: TrainingRecord, run_id: str) -> None:
        name = _name(record.domain)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, tags={"qlora.domain": record.domain},
                                                description=f"QLoRA adapters of the {record.domain} domain")
        if self.model_version(record.domain, record.version) is None:
            self.client.create_model_version(name, source=Path(record.adapter_path).as_uri(), run_id=run_id,
                                             tags={"adapter_version": record.version,
                                                   "served_name": f"{record.domain}@{record.version}"})

    def model_version(self, domain: str, version: str):
        try:
            versions = self.client.search_model_versions(f"name = '{_name(domain)}'")
        except MlflowException:
            return None
        return next((v for v in versions if v.tags.get("adapter_version") == version), None)

    def alias_version(self, domain: str, alias: str) -> str | None:
        """The adapter version an alias points at, or None."""
        try:
            return self.client.get_model_version_by_alias(_name(domain), alias).tags.get("adapter_version")
        except MlflowException:
            return None

    def follow_serving(self, domain: str, weights: dict[str, float]) -> bool:
        ranked = [v for v, _ in sorted(weights.items(), key=lambda item: (-item[1], item[0]))]
        wanted = {SERVING_ALIAS: ranked[0] if ranked else None, CANARY_ALIAS: ranked[1] if len(ranked) > 1 else None}
        moved = False
        for alias, version in wanted.items():
            if self.alias_version(domain, alias) == version:
                continue
            if version is None:
                self.client.delete_registered_model_alias(_name(domain), alias)
                moved = True
                continue
            model_version = self.model_version(domain, version)
            if model_version is None:
                continue  # not tracked (trained before tracking was on); the next training registers its successor
            self.client.set_registered_model_alias(_name(domain), alias, model_version.version)
            moved = True
        return moved

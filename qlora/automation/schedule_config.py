"""Typed view of ``configs/schedule.yaml``: the weekly cron and the sensors' intervals.

Bad values fail at load with the file and the field named, not later in the daemon.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qlora.core.config import ConfigError, read_yaml_mapping, validate_mapping
from qlora.core.paths import paths

Status = Literal["running", "stopped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeeklyCycle(_Strict):
    cron: str = Field("0 3 * * 1", description="Cron for the full cycle (default Monday 03:00).")
    timezone: str = Field("Asia/Seoul", description="IANA time zone the cron is read in.")
    default_status: Status = "running"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron (minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'Asia/Seoul', 'UTC')") from None
        return value


class SensorSettings(_Strict):
    interval_seconds: int = Field(60, ge=5, description="Seconds between sensor ticks.")
    default_status: Status = "running"


class Sensors(_Strict):
    training_data: SensorSettings = SensorSettings()
    config_change: SensorSettings = SensorSettings()
    serving_observation: SensorSettings = SensorSettings(interval_seconds=30)


class ScheduleConfig(_Strict):
    weekly_cycle: WeeklyCycle = WeeklyCycle()
    sensors: Sensors = Sensors()




def load_schedule_config(path: Path | None = None) -> ScheduleConfig:
    """Read the schedule config (default ``$QLORA_CONFIG_DIR/schedule.yaml``); absent file = defaults."""
    path = path or paths().config_dir / "schedule.yaml"
    if not path.is_file():
        return ScheduleConfig()
    return validate_mapping(ScheduleConfig, read_yaml_mapping(path, ConfigError), path, ConfigError)

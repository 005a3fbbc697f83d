"""Limits shared by the API (checked at submit) and the workers (checked again at run time).

Every limit is a setting (env `LANTERN_<NAME>`) with a safe default; the hard caps in the kind
schemas are the outer bound no setting can lift. A field bounded by a setting says which one
(`limited(name)` in its `json_schema_extra`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.common import FieldError


class Limits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANTERN_", extra="ignore")

    max_prompt_tokens: int = Field(512, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    max_steps: int = Field(512, ge=1)
    max_samples: int = Field(2048, ge=1)
    max_result_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)


LIMIT_KEY = "x-limit"


def limited(name: str) -> dict[str, str]:
    """`json_schema_extra` of a field bounded by the setting `name` (its `le`/`max_length` stays the
    hard cap): the API shows the configured value in its OpenAPI document and names the setting when
    a value is over either (service/setting_limits.py). Names the setting, never reads it."""
    if name not in Limits.model_fields:
        raise ValueError(f"no limit setting {name!r}")
    return {LIMIT_KEY: name}


def over(loc: list[str | int], value: int, limit_name: str, limit: int) -> FieldError:
    """The FieldError for `value` at `loc` being over the setting `limit_name`."""
    return FieldError(
        loc=loc,
        msg=f"{value} is over the limit {limit_name}={limit}",
        type="limit_exceeded",
        ctx={"limit": limit_name, "limit_value": limit, "value": value},
    )

"""Limits shared by the API (checked at submit) and the workers (checked again at run time).

Every limit is a setting (env `LANTERN_<NAME>`) with a safe default; the hard caps in the kind
schemas are the outer bound no setting can lift.
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


def over(loc: list[str | int], value: int, limit_name: str, limit: int) -> FieldError:
    """The FieldError for `value` at `loc` being over the setting `limit_name`."""
    return FieldError(
        loc=loc,
        msg=f"{value} is over the limit {limit_name}={limit}",
        type="limit_exceeded",
        ctx={"limit": limit_name, "limit_value": limit, "value": value},
    )

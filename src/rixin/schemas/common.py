"""The base of every OpenAI wire model: unknown fields are accepted and logged, never fatal."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

log = logging.getLogger("rixin.schemas")


class OpenAIBaseModel(BaseModel):
    """Accepts fields OpenAI may add tomorrow; logs them so nobody wonders why they do nothing."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="after")
    def _log_unknown_fields(self) -> OpenAIBaseModel:
        extra = self.model_extra
        if extra:
            log.info(
                "ignoring unknown fields",
                extra={"model": type(self).__name__, "fields": sorted(extra)},
            )
        return self

    def known(self, **kwargs: Any) -> dict[str, Any]:
        """The declared fields only, as a dict (``exclude_none`` by default)."""
        kwargs.setdefault("exclude_none", True)
        data = self.model_dump(**kwargs)
        for name in self.model_extra or {}:
            data.pop(name, None)
        return data


class ListObject(OpenAIBaseModel):
    object: str = "list"
    data: list[Any]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

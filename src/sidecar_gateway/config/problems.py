"""Configuration problems and their one-line rendering (contract §2.2, gateway-config.md ``check``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Level", "Problem", "has_errors"]


class Level(enum.Enum):
    ERROR = "ERROR"
    WARNING = "WARNING"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem.

    * Processor problems: ``where`` = ``"serviceId/endpointId"``, ``point`` = ``"pre"``/``"post"``, ``key`` = the
      key as reported by §2.2 (or ``"line <n>"``).  Rendered ``ERROR   svc/ep  pre   key: message``.
    * File problems: ``where`` = ``""``, ``point`` = ``""``, ``key`` = the YAML path
      (``services[0].endpoints[1].target``).  Rendered ``ERROR   services[0].endpoints[1].target: message``.
    """

    level: Level
    key: str
    message: str
    where: str = ""
    point: str = ""

    def render(self) -> str:
        if self.where:
            return f"{self.level.value:<7} {self.where}  {self.point:<5} {self.key}: {self.message}"
        return f"{self.level.value:<7} {self.key}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.level is Level.ERROR


def has_errors(problems: list[Problem]) -> bool:
    return any(p.level is Level.ERROR for p in problems)

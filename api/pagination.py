from typing import Any

from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

from api.problems import ProblemValidationError


class IdCursorPagination(CursorPagination):
    """Stable pages over the primary key, newest last: ``?cursor=…&page_size=…``. A page size
    that is not a whole number from 1 to ``max_page_size`` is refused (400), not ignored."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Request) -> Any:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ProblemValidationError(
                [
                    {
                        "path": self.page_size_query_param,
                        "message": f"Give a whole number from 1 to {self.max_page_size}.",
                    }
                ]
            )
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                }
        return parameters

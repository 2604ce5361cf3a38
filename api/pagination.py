from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Stable pages over the primary key, newest last: ``?cursor=…&page_size=…``."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

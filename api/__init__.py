"""The REST API (``/api/v1/``): tokens, authentication, problem details and the resources.

Every endpoint goes through the apps' services and ``visible_to`` scoping; the API implements
no business rule of its own.
"""

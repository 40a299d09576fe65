"""Kubernetes ``Status`` errors, so clients see exactly what a real API server sends.

kubernetes_asyncio, kubectl and KubeSpawner branch on ``code`` and ``reason``
(e.g. KubeSpawner patches on 409 AlreadyExists, reflectors relist on 410 Expired),
so every failure inside kubesim is raised as an :class:`ApiError`.
"""

from __future__ import annotations


class ApiError(Exception):
    """An API failure that the HTTP layer renders as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rtype, name, **extra) -> dict:
    d = {"name": name, "group": rtype.group, "kind": rtype.plural} if rtype is not None else {"name": name}
    if not d.get("group"):
        d.pop("group", None)
    d.update(extra)
    return d


def not_found(rtype, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rtype.key} "{name}" not found', details=_details(rtype, name))


def already_exists(rtype, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rtype.key} "{name}" already exists', details=_details(rtype, name)
    )


def conflict(
    rtype,
    name: str,
    why: str = "the object has been modified; please apply your changes to the latest version and try again",
) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rtype.key} "{name}": {why}',
        details=_details(rtype, name),
    )


def invalid(rtype, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid; ``causes`` are ``(field, message)`` pairs, as the real server lists them."""
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    return ApiError(
        422,
        "Invalid",
        f'{rtype.kind} "{name}" is invalid: {text}',
        details=_details(
            rtype,
            name,
            kind=rtype.kind,
            causes=[{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        ),
    )


def forbidden(rtype, name: str, why: str) -> ApiError:
    return ApiError(
        403, "Forbidden", f'{rtype.key} "{name}" is forbidden: {why}', details=_details(rtype, name)
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)

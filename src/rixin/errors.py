"""The one error tree of rixin.

Every error a client can see is a ``RixinError``; it carries its HTTP status and the OpenAI
``type``/``code`` and is rendered once, by ``rixin.api.errors``, as OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``. Foreign errors (httpx, xllamacpp,
SQLAlchemy) are mapped at the boundary to the most specific class here, ``raise ... from exc``.

    RixinError                              500 server_error
    ├── InvalidRequest                      400 invalid_request_error   (param names the field)
    │   ├── UnsupportedParameter            400 code=unsupported_parameter
    │   ├── ContextLengthExceeded           400 code=context_length_exceeded
    │   └── IdempotencyKeyMismatch          422 code=idempotency_key_reused
    ├── AuthenticationFailed                401 code=invalid_api_key
    ├── PermissionDenied                    403 code=permission_denied
    ├── NotFound                            404 code=not_found         (also for other tenants)
    ├── RequestTooLarge                     413 code=request_too_large
    ├── Conflict                            409 code=conflict           (only for true races)
    ├── RateLimited                         429 code=rate_limit_exceeded, Retry-After
    │   └── QuotaExhausted                  429 code=insufficient_quota, x-should-retry: false
    ├── Overloaded                          503 code=overloaded, Retry-After
    │   └── ShuttingDown                    503 code=shutting_down
    ├── ModelUnavailable                    503 code=model_unavailable  (missing or broken model)
    └── BackendError                        502 code=backend_error      (upstream failure)
        ├── BackendTimeout                  504 code=backend_timeout
        └── BackendStatusError              upstream status kept for routing decisions
"""

from __future__ import annotations


class RixinError(Exception):
    """Base of every error rendered to a client."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(RixinError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class IdempotencyKeyMismatch(InvalidRequest):
    status_code = 422
    code = "idempotency_key_reused"


class AuthenticationFailed(RixinError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RixinError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(RixinError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class RequestTooLarge(RixinError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class Conflict(RixinError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


def _retry_after(seconds: float) -> dict[str, str]:
    whole = max(1, min(60, int(seconds + 0.999)))
    return {"Retry-After": str(whole), "Retry-After-Ms": str(int(seconds * 1000))}


class RateLimited(RixinError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.headers.update(_retry_after(retry_after))


class QuotaExhausted(RixinError):
    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.headers["x-should-retry"] = "false"


class Overloaded(RixinError):
    status_code = 503
    error_type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.headers.update(_retry_after(retry_after))


class ShuttingDown(Overloaded):
    code = "shutting_down"


class ModelUnavailable(RixinError):
    status_code = 503
    error_type = "server_error"
    code = "model_unavailable"


class BackendError(RixinError):
    """An upstream model backend failed; the router may try another replica."""

    status_code = 502
    error_type = "server_error"
    code = "backend_error"


class BackendTimeout(BackendError):
    status_code = 504
    code = "backend_timeout"


class BackendStatusError(BackendError):
    """An upstream answered with an HTTP error; its status drives failover and cooldown."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        retry_after: float | None = None,
        upstream_body: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.upstream_body = upstream_body or {}

    @property
    def is_client_error(self) -> bool:
        """A 4xx other than auth/rate-limit: the request itself is wrong, never retry it."""
        return 400 <= self.upstream_status < 500 and self.upstream_status not in (
            401,
            403,
            408,
            429,
        )

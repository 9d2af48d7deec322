"""Dependencies that routes declare, as ``Annotated`` aliases so routes read as prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rixin.auth.service import AuthService, Principal
from rixin.errors import AuthenticationFailed, PermissionDenied
from rixin.services.container import Services


async def get_services(request: Request) -> Services:
    """``async`` on purpose: a plain ``def`` dependency costs a thread-pool hop per request."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return request.headers.get("api-key")  # Azure-style clients
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer <key>'.")
    return token.strip()


async def get_principal(request: Request) -> Principal:
    services: Services = request.app.state.services
    source = request.client.host if request.client else "unknown"
    principal = await services.auth.authenticate(_bearer(request), source=source)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(request: Request) -> Principal:
    principal = await get_principal(request)
    if principal.role != "admin":
        raise PermissionDenied("This route needs an admin key.")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]


async def get_auth(request: Request) -> AuthService:
    services: Services = request.app.state.services
    return services.auth


AuthDep = Annotated[AuthService, Depends(get_auth)]

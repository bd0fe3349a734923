"""The request type of gateway views, for the type checker only.

DRF's stubs type `request.auth` as `Token | Any`; behind `ApiKeyAuthentication` and
`OperationPermission` it is the authenticated `Principal` (a view that needs no key never
reads it). Views annotate `request: AgentRequest` so services get a `Principal`, not `Any`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request

if TYPE_CHECKING:
    from apps.gateway.auth import Principal

    class AgentRequest(Request):
        auth: Principal

else:
    AgentRequest = Request

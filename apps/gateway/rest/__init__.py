"""The REST adapter of the gateway: everything DRF-specific lives in this package.

- `auth`: authentication (`Authorization: Bearer`) and the access-table permission;
- `views`: `GatewayApi`, the base view that runs every write under its Idempotency-Key;
- `problems`: the exception handler (domain errors → problem+json) and the 404/500 handlers;
- `serializers`: strict input serializers; `parsers`: bounded JSON and raw-bytes parsers.
"""

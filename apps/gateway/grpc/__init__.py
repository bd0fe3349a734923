"""The gateway's gRPC adapter: the server (`server`), the per-call guard (`interceptors`), status
mapping (`errors`), the composed ControlPlane servicer (`servicer`) and the generated code (`gen`,
from protos/ by `make protos`)."""

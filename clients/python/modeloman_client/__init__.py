"""The ModeloMan agent client: one interface over REST and gRPC (see client.py).

    from modeloman_client import Client
    client = Client.grpc("127.0.0.1:50051", token)          # or Client.rest("http://127.0.0.1:8080", token)
"""

from .client import Client, retriable
from .types import (
                    Admission,
                    Cap,
                    CapStatus,
                    EffectivePolicy,
                    Identity,
                    ModeloManError,
                    Policy,
                    PolicyLevel,
                    Recorded,
                    Run,
)

__all__ = ["Admission", "Cap", "CapStatus", "Client", "EffectivePolicy", "Identity", "ModeloManError", "Policy",
           "PolicyLevel", "Recorded", "Run", "retriable"]

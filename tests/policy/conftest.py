"""Fixtures of the admission tests that run over both transports against real servers."""

import grpc
import pytest

from tests.factories import AgentFactory, issue_key, make_price
from tests.gateway.transports import Grpc, Rest


@pytest.fixture(params=["rest", "grpc"])
def door(request):
    """Each test twice: over REST (the WSGI stack) and over gRPC (a real grpcserve)."""
    if request.param == "rest":
        yield Rest()
        return
    with grpc.insecure_channel(request.getfixturevalue("server")) as channel:
        yield Grpc(channel)


@pytest.fixture
def priced_agent():
    """An agent and its `tasks:write` token; gpt-test costs $10 per million input tokens."""
    make_price("gpt-test", input_per_mtok="10")
    agent = AgentFactory.create()
    return agent, issue_key(agent=agent, scopes=["tasks:write"]).token

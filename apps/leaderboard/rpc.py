"""gRPC for the public leaderboard: the same board as GET /api/v1/leaderboard, from the same selector."""

from __future__ import annotations

from typing import Any

from apps.gateway.grpc.convert import timestamp
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.leaderboard import selectors


def _entry_message(entry: dict) -> pb.LeaderboardEntry:
    fields = {**entry, "success_rate_ci95": entry["success_rate_ci95"] or [],
              "trend": [pb.TrendPoint(success_rate=rate) for rate in entry["trend"]]}
    return pb.LeaderboardEntry(**fields)


class LeaderboardRpc:
    def GetLeaderboard(self, request: pb.GetLeaderboardRequest, context: Any) -> pb.Leaderboard:  # noqa: N802  # gRPC method name
        # proto3 strings are never absent: empty means "not set", the default.
        kind, window = selectors.public_board_params(kind=request.kind or None, window=request.window or None)
        board = selectors.public_board(kind=kind, window=window)
        return pb.Leaderboard(
            kind=board["kind"], window=board["window"], generated_at=timestamp(board["generated_at"]),
            min_samples=board["min_samples"], demo=board["demo"],
            buckets=[timestamp(bucket) for bucket in board["buckets"]],
            entries=[_entry_message(entry) for entry in board["entries"]],
        )

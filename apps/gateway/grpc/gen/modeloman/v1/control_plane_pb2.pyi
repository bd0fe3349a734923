import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("key_id", "agent", "project", "scopes", "expires_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    agent: str
    project: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., agent: _Optional[str] = ..., project: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AdmitRequest(_message.Message):
    __slots__ = ("model", "estimated_input_tokens", "estimated_output_tokens", "estimated_cost_usd", "run_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: str
    run_id: str
    def __init__(self, model: _Optional[str] = ..., estimated_input_tokens: _Optional[int] = ..., estimated_output_tokens: _Optional[int] = ..., estimated_cost_usd: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class CapStatus(_message.Message):
    __slots__ = ("cap_id", "metric", "window", "window_start", "mode", "limit", "used", "reserved", "remaining")
    CAP_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    cap_id: int
    metric: str
    window: str
    window_start: _timestamp_pb2.Timestamp
    mode: str
    limit: str
    used: str
    reserved: str
    remaining: str
    def __init__(self, cap_id: _Optional[int] = ..., metric: _Optional[str] = ..., window: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mode: _Optional[str] = ..., limit: _Optional[str] = ..., used: _Optional[str] = ..., reserved: _Optional[str] = ..., remaining: _Optional[str] = ...) -> None: ...

class AdmitResponse(_message.Message):
    __slots__ = ("allowed", "reasons", "reservation_id", "dry_run_would_deny", "estimated_cost_usd", "caps")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_WOULD_DENY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    reservation_id: str
    dry_run_would_deny: _containers.RepeatedScalarFieldContainer[str]
    estimated_cost_usd: str
    caps: _containers.RepeatedCompositeFieldContainer[CapStatus]
    def __init__(self, allowed: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., reservation_id: _Optional[str] = ..., dry_run_would_deny: _Optional[_Iterable[str]] = ..., estimated_cost_usd: _Optional[str] = ..., caps: _Optional[_Iterable[_Union[CapStatus, _Mapping]]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "task", "status", "started_at", "finished_at", "attempts", "input_tokens", "output_tokens", "cost_usd", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: str
    status: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., task: _Optional[str] = ..., status: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("task", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    task: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, task: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FinishRunRequest(_message.Message):
    __slots__ = ("run_id", "status", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("kind", "time", "message", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    time: _timestamp_pb2.Timestamp
    message: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, kind: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecordRunEventRequest(_message.Message):
    __slots__ = ("run_id", "events")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    events: _containers.RepeatedCompositeFieldContainer[RunEvent]
    def __init__(self, run_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[RunEvent, _Mapping]]] = ...) -> None: ...

class PromptAttempt(_message.Message):
    __slots__ = ("model", "success", "input_tokens", "output_tokens", "latency_ms", "time", "prompt_name", "prompt_version", "error_code", "reported_cost_usd", "run_id", "reservation_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    model: str
    success: bool
    input_tokens: int
    output_tokens: int
    latency_ms: int
    time: _timestamp_pb2.Timestamp
    prompt_name: str
    prompt_version: str
    error_code: str
    reported_cost_usd: str
    run_id: str
    reservation_id: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, model: _Optional[str] = ..., success: _Optional[bool] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., latency_ms: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prompt_name: _Optional[str] = ..., prompt_version: _Optional[str] = ..., error_code: _Optional[str] = ..., reported_cost_usd: _Optional[str] = ..., run_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecordPromptAttemptRequest(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: PromptAttempt
    def __init__(self, attempt: _Optional[_Union[PromptAttempt, _Mapping]] = ...) -> None: ...

class RecordPromptAttemptsRequest(_message.Message):
    __slots__ = ("attempts",)
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[PromptAttempt]
    def __init__(self, attempts: _Optional[_Iterable[_Union[PromptAttempt, _Mapping]]] = ...) -> None: ...

class Benchmark(_message.Message):
    __slots__ = ("suite", "model", "score", "time", "prompt_name", "prompt_version", "passed", "total", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUITE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    suite: str
    model: str
    score: float
    time: _timestamp_pb2.Timestamp
    prompt_name: str
    prompt_version: str
    passed: int
    total: int
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, suite: _Optional[str] = ..., model: _Optional[str] = ..., score: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prompt_name: _Optional[str] = ..., prompt_version: _Optional[str] = ..., passed: _Optional[int] = ..., total: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecordBenchmarkRequest(_message.Message):
    __slots__ = ("benchmark",)
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    benchmark: Benchmark
    def __init__(self, benchmark: _Optional[_Union[Benchmark, _Mapping]] = ...) -> None: ...

class RecordResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class ModelList(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class EffectivePolicy(_message.Message):
    __slots__ = ("kill_switch", "kill_switch_levels", "dry_run_levels", "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt", "max_concurrent_runs")
    KILL_SWITCH_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_LEVELS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_LEVELS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNPRICED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    kill_switch: bool
    kill_switch_levels: _containers.RepeatedScalarFieldContainer[str]
    dry_run_levels: _containers.RepeatedScalarFieldContainer[str]
    allowed_models: ModelList
    allow_unpriced_models: bool
    max_tokens_per_attempt: int
    max_cost_per_attempt: str
    max_concurrent_runs: int
    def __init__(self, kill_switch: _Optional[bool] = ..., kill_switch_levels: _Optional[_Iterable[str]] = ..., dry_run_levels: _Optional[_Iterable[str]] = ..., allowed_models: _Optional[_Union[ModelList, _Mapping]] = ..., allow_unpriced_models: _Optional[bool] = ..., max_tokens_per_attempt: _Optional[int] = ..., max_cost_per_attempt: _Optional[str] = ..., max_concurrent_runs: _Optional[int] = ...) -> None: ...

class PolicyLevel(_message.Message):
    __slots__ = ("level", "kill_switch", "dry_run", "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt", "max_concurrent_runs")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNPRICED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    level: str
    kill_switch: bool
    dry_run: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    allow_unpriced_models: bool
    max_tokens_per_attempt: int
    max_cost_per_attempt: str
    max_concurrent_runs: int
    def __init__(self, level: _Optional[str] = ..., kill_switch: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., allow_unpriced_models: _Optional[bool] = ..., max_tokens_per_attempt: _Optional[int] = ..., max_cost_per_attempt: _Optional[str] = ..., max_concurrent_runs: _Optional[int] = ...) -> None: ...

class Cap(_message.Message):
    __slots__ = ("id", "level", "metric", "window", "limit", "model", "mode", "enabled", "used", "reserved")
    ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    id: int
    level: str
    metric: str
    window: str
    limit: str
    model: str
    mode: str
    enabled: bool
    used: str
    reserved: str
    def __init__(self, id: _Optional[int] = ..., level: _Optional[str] = ..., metric: _Optional[str] = ..., window: _Optional[str] = ..., limit: _Optional[str] = ..., model: _Optional[str] = ..., mode: _Optional[str] = ..., enabled: _Optional[bool] = ..., used: _Optional[str] = ..., reserved: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("agent", "project", "effective", "levels", "caps")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    project: str
    effective: EffectivePolicy
    levels: _containers.RepeatedCompositeFieldContainer[PolicyLevel]
    caps: _containers.RepeatedCompositeFieldContainer[Cap]
    def __init__(self, agent: _Optional[str] = ..., project: _Optional[str] = ..., effective: _Optional[_Union[EffectivePolicy, _Mapping]] = ..., levels: _Optional[_Iterable[_Union[PolicyLevel, _Mapping]]] = ..., caps: _Optional[_Iterable[_Union[Cap, _Mapping]]] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("subject", "update_mask", "kill_switch", "dry_run", "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt", "max_concurrent_runs", "reason")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNPRICED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject: str
    update_mask: _field_mask_pb2.FieldMask
    kill_switch: bool
    dry_run: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    allow_unpriced_models: bool
    max_tokens_per_attempt: int
    max_cost_per_attempt: str
    max_concurrent_runs: int
    reason: str
    def __init__(self, subject: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., kill_switch: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., allow_unpriced_models: _Optional[bool] = ..., max_tokens_per_attempt: _Optional[int] = ..., max_cost_per_attempt: _Optional[str] = ..., max_concurrent_runs: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ListPolicyCapsRequest(_message.Message):
    __slots__ = ("limit", "after")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    limit: int
    after: int
    def __init__(self, limit: _Optional[int] = ..., after: _Optional[int] = ...) -> None: ...

class ListPolicyCapsResponse(_message.Message):
    __slots__ = ("caps", "next_after")
    CAPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    caps: _containers.RepeatedCompositeFieldContainer[Cap]
    next_after: int
    def __init__(self, caps: _Optional[_Iterable[_Union[Cap, _Mapping]]] = ..., next_after: _Optional[int] = ...) -> None: ...

class UpsertPolicyCapRequest(_message.Message):
    __slots__ = ("cap_id", "subject", "metric", "window", "limit", "model", "mode", "enabled")
    CAP_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    cap_id: int
    subject: str
    metric: str
    window: str
    limit: str
    model: str
    mode: str
    enabled: bool
    def __init__(self, cap_id: _Optional[int] = ..., subject: _Optional[str] = ..., metric: _Optional[str] = ..., window: _Optional[str] = ..., limit: _Optional[str] = ..., model: _Optional[str] = ..., mode: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class DeletePolicyCapRequest(_message.Message):
    __slots__ = ("cap_id",)
    CAP_ID_FIELD_NUMBER: _ClassVar[int]
    cap_id: int
    def __init__(self, cap_id: _Optional[int] = ...) -> None: ...

class DeletePolicyCapResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportHeader(_message.Message):
    __slots__ = ("exported_at",)
    EXPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    exported_at: _timestamp_pb2.Timestamp
    def __init__(self, exported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportProject(_message.Message):
    __slots__ = ("id", "slug", "name", "public_name", "leaderboard_opt_in", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_NAME_FIELD_NUMBER: _ClassVar[int]
    LEADERBOARD_OPT_IN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    slug: str
    name: str
    public_name: str
    leaderboard_opt_in: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., slug: _Optional[str] = ..., name: _Optional[str] = ..., public_name: _Optional[str] = ..., leaderboard_opt_in: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportAgent(_message.Message):
    __slots__ = ("id", "project_id", "name", "status", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    project_id: int
    name: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., project_id: _Optional[int] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportApiKey(_message.Message):
    __slots__ = ("id", "key_id", "name", "agent_id", "scopes", "expires_at", "revoked_at", "revoked_reason", "rotated_from_id", "grace_until", "last_used_at", "created_at", "created_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_REASON_FIELD_NUMBER: _ClassVar[int]
    ROTATED_FROM_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: int
    key_id: str
    name: str
    agent_id: int
    scopes: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    revoked_reason: str
    rotated_from_id: int
    grace_until: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    def __init__(self, id: _Optional[int] = ..., key_id: _Optional[str] = ..., name: _Optional[str] = ..., agent_id: _Optional[int] = ..., scopes: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_reason: _Optional[str] = ..., rotated_from_id: _Optional[int] = ..., grace_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ...) -> None: ...

class ExportPolicy(_message.Message):
    __slots__ = ("id", "subject_type", "project_id", "agent_id", "kill_switch", "kill_switch_reason", "dry_run", "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt", "max_concurrent_runs", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNPRICED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_PER_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    subject_type: str
    project_id: int
    agent_id: int
    kill_switch: bool
    kill_switch_reason: str
    dry_run: bool
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    allow_unpriced_models: bool
    max_tokens_per_attempt: int
    max_cost_per_attempt: str
    max_concurrent_runs: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., subject_type: _Optional[str] = ..., project_id: _Optional[int] = ..., agent_id: _Optional[int] = ..., kill_switch: _Optional[bool] = ..., kill_switch_reason: _Optional[str] = ..., dry_run: _Optional[bool] = ..., allowed_models: _Optional[_Iterable[str]] = ..., allow_unpriced_models: _Optional[bool] = ..., max_tokens_per_attempt: _Optional[int] = ..., max_cost_per_attempt: _Optional[str] = ..., max_concurrent_runs: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportCap(_message.Message):
    __slots__ = ("id", "subject_type", "project_id", "agent_id", "metric", "window", "limit", "model", "mode", "enabled")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    id: int
    subject_type: str
    project_id: int
    agent_id: int
    metric: str
    window: str
    limit: str
    model: str
    mode: str
    enabled: bool
    def __init__(self, id: _Optional[int] = ..., subject_type: _Optional[str] = ..., project_id: _Optional[int] = ..., agent_id: _Optional[int] = ..., metric: _Optional[str] = ..., window: _Optional[str] = ..., limit: _Optional[str] = ..., model: _Optional[str] = ..., mode: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class ExportRun(_message.Message):
    __slots__ = ("id", "agent_id", "project_id", "task", "status", "started_at", "finished_at", "attempts", "input_tokens", "output_tokens", "cost_usd")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent_id: int
    project_id: int
    task: str
    status: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: str
    def __init__(self, id: _Optional[str] = ..., agent_id: _Optional[int] = ..., project_id: _Optional[int] = ..., task: _Optional[str] = ..., status: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ...) -> None: ...

class ExportRecord(_message.Message):
    __slots__ = ("header", "project", "agent", "api_key", "policy", "cap", "run")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    header: ExportHeader
    project: ExportProject
    agent: ExportAgent
    api_key: ExportApiKey
    policy: ExportPolicy
    cap: ExportCap
    run: ExportRun
    def __init__(self, header: _Optional[_Union[ExportHeader, _Mapping]] = ..., project: _Optional[_Union[ExportProject, _Mapping]] = ..., agent: _Optional[_Union[ExportAgent, _Mapping]] = ..., api_key: _Optional[_Union[ExportApiKey, _Mapping]] = ..., policy: _Optional[_Union[ExportPolicy, _Mapping]] = ..., cap: _Optional[_Union[ExportCap, _Mapping]] = ..., run: _Optional[_Union[ExportRun, _Mapping]] = ...) -> None: ...

class GetLeaderboardRequest(_message.Message):
    __slots__ = ("kind", "window")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    kind: str
    window: str
    def __init__(self, kind: _Optional[str] = ..., window: _Optional[str] = ...) -> None: ...

class TrendPoint(_message.Message):
    __slots__ = ("success_rate",)
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    success_rate: float
    def __init__(self, success_rate: _Optional[float] = ...) -> None: ...

class LeaderboardEntry(_message.Message):
    __slots__ = ("rank", "name", "version", "project", "model", "attempts", "successes", "tasks", "passed", "runs", "mean_score", "success_rate", "success_rate_ci95", "cost_per_success_usd", "cost_partial", "latency_p50_ms", "latency_p95_ms", "trend")
    RANK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_CI95_FIELD_NUMBER: _ClassVar[int]
    COST_PER_SUCCESS_USD_FIELD_NUMBER: _ClassVar[int]
    COST_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    TREND_FIELD_NUMBER: _ClassVar[int]
    rank: int
    name: str
    version: str
    project: str
    model: str
    attempts: int
    successes: int
    tasks: int
    passed: int
    runs: int
    mean_score: float
    success_rate: float
    success_rate_ci95: _containers.RepeatedScalarFieldContainer[float]
    cost_per_success_usd: str
    cost_partial: bool
    latency_p50_ms: int
    latency_p95_ms: int
    trend: _containers.RepeatedCompositeFieldContainer[TrendPoint]
    def __init__(self, rank: _Optional[int] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., project: _Optional[str] = ..., model: _Optional[str] = ..., attempts: _Optional[int] = ..., successes: _Optional[int] = ..., tasks: _Optional[int] = ..., passed: _Optional[int] = ..., runs: _Optional[int] = ..., mean_score: _Optional[float] = ..., success_rate: _Optional[float] = ..., success_rate_ci95: _Optional[_Iterable[float]] = ..., cost_per_success_usd: _Optional[str] = ..., cost_partial: _Optional[bool] = ..., latency_p50_ms: _Optional[int] = ..., latency_p95_ms: _Optional[int] = ..., trend: _Optional[_Iterable[_Union[TrendPoint, _Mapping]]] = ...) -> None: ...

class Leaderboard(_message.Message):
    __slots__ = ("kind", "window", "generated_at", "min_samples", "demo", "buckets", "entries")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    window: str
    generated_at: _timestamp_pb2.Timestamp
    min_samples: int
    demo: bool
    buckets: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    entries: _containers.RepeatedCompositeFieldContainer[LeaderboardEntry]
    def __init__(self, kind: _Optional[str] = ..., window: _Optional[str] = ..., generated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_samples: _Optional[int] = ..., demo: _Optional[bool] = ..., buckets: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., entries: _Optional[_Iterable[_Union[LeaderboardEntry, _Mapping]]] = ...) -> None: ...

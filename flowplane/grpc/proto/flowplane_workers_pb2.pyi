from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CoreToWorker(_message.Message):
    __slots__ = ("config", "snapshot", "tokens", "auth", "shutdown")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    config: WorkerConfig
    snapshot: SnapshotFrame
    tokens: TokenStates
    auth: AuthReply
    shutdown: Shutdown
    def __init__(self, config: _Optional[_Union[WorkerConfig, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotFrame, _Mapping]] = ..., tokens: _Optional[_Union[TokenStates, _Mapping]] = ..., auth: _Optional[_Union[AuthReply, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class WorkerConfig(_message.Message):
    __slots__ = ("slot", "host", "port", "auth", "keepalive_seconds", "keepalive_timeout_seconds", "max_names_per_request", "max_names_per_stream", "tls_cert", "tls_key", "tls_client_ca", "first_stream_id", "status_interval_seconds", "log_format", "log_level")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_NAMES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_NAMES_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    TLS_CERT_FIELD_NUMBER: _ClassVar[int]
    TLS_KEY_FIELD_NUMBER: _ClassVar[int]
    TLS_CLIENT_CA_FIELD_NUMBER: _ClassVar[int]
    FIRST_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOG_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LOG_LEVEL_FIELD_NUMBER: _ClassVar[int]
    slot: int
    host: str
    port: int
    auth: str
    keepalive_seconds: float
    keepalive_timeout_seconds: float
    max_names_per_request: int
    max_names_per_stream: int
    tls_cert: str
    tls_key: str
    tls_client_ca: str
    first_stream_id: int
    status_interval_seconds: float
    log_format: str
    log_level: str
    def __init__(self, slot: _Optional[int] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., auth: _Optional[str] = ..., keepalive_seconds: _Optional[float] = ..., keepalive_timeout_seconds: _Optional[float] = ..., max_names_per_request: _Optional[int] = ..., max_names_per_stream: _Optional[int] = ..., tls_cert: _Optional[str] = ..., tls_key: _Optional[str] = ..., tls_client_ca: _Optional[str] = ..., first_stream_id: _Optional[int] = ..., status_interval_seconds: _Optional[float] = ..., log_format: _Optional[str] = ..., log_level: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("name", "version", "any_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ANY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    any_bytes: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., any_bytes: _Optional[bytes] = ...) -> None: ...

class TypeChange(_message.Message):
    __slots__ = ("type_url", "upserted", "removed")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    upserted: _containers.RepeatedCompositeFieldContainer[Resource]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type_url: _Optional[str] = ..., upserted: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class Ref(_message.Message):
    __slots__ = ("kind", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("type_url", "name")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    name: str
    def __init__(self, type_url: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class IndexEntry(_message.Message):
    __slots__ = ("ref", "has_team", "team", "refs", "needs", "outputs")
    REF_FIELD_NUMBER: _ClassVar[int]
    HAS_TEAM_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ref: Ref
    has_team: bool
    team: str
    refs: _containers.RepeatedCompositeFieldContainer[Ref]
    needs: _containers.RepeatedCompositeFieldContainer[Ref]
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    def __init__(self, ref: _Optional[_Union[Ref, _Mapping]] = ..., has_team: _Optional[bool] = ..., team: _Optional[str] = ..., refs: _Optional[_Iterable[_Union[Ref, _Mapping]]] = ..., needs: _Optional[_Iterable[_Union[Ref, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ...) -> None: ...

class SnapshotFrame(_message.Message):
    __slots__ = ("serial", "base_serial", "full", "types", "index_upserted", "index_removed")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    BASE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    INDEX_UPSERTED_FIELD_NUMBER: _ClassVar[int]
    INDEX_REMOVED_FIELD_NUMBER: _ClassVar[int]
    serial: int
    base_serial: int
    full: bool
    types: _containers.RepeatedCompositeFieldContainer[TypeChange]
    index_upserted: _containers.RepeatedCompositeFieldContainer[IndexEntry]
    index_removed: _containers.RepeatedCompositeFieldContainer[Ref]
    def __init__(self, serial: _Optional[int] = ..., base_serial: _Optional[int] = ..., full: _Optional[bool] = ..., types: _Optional[_Iterable[_Union[TypeChange, _Mapping]]] = ..., index_upserted: _Optional[_Iterable[_Union[IndexEntry, _Mapping]]] = ..., index_removed: _Optional[_Iterable[_Union[Ref, _Mapping]]] = ...) -> None: ...

class TokenState(_message.Message):
    __slots__ = ("id", "active", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    active: bool
    expires_at: float
    def __init__(self, id: _Optional[str] = ..., active: _Optional[bool] = ..., expires_at: _Optional[float] = ...) -> None: ...

class TokenStates(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenState]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenState, _Mapping]]] = ...) -> None: ...

class AuthReply(_message.Message):
    __slots__ = ("request_id", "ok", "grpc_status", "message", "has_team", "team", "team_required", "token_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_TEAM_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    TEAM_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    ok: bool
    grpc_status: int
    message: str
    has_team: bool
    team: str
    team_required: bool
    token_id: str
    def __init__(self, request_id: _Optional[int] = ..., ok: _Optional[bool] = ..., grpc_status: _Optional[int] = ..., message: _Optional[str] = ..., has_team: _Optional[bool] = ..., team: _Optional[str] = ..., team_required: _Optional[bool] = ..., token_id: _Optional[str] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("grace_seconds",)
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grace_seconds: float
    def __init__(self, grace_seconds: _Optional[float] = ...) -> None: ...

class WorkerToCore(_message.Message):
    __slots__ = ("hello", "ready", "nodes", "auth", "counters", "nack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ready: Ready
    nodes: NodeStatus
    auth: AuthRequest
    counters: Counters
    nack: NackReport
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., nodes: _Optional[_Union[NodeStatus, _Mapping]] = ..., auth: _Optional[_Union[AuthRequest, _Mapping]] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ..., nack: _Optional[_Union[NackReport, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("slot", "pid")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    slot: int
    pid: int
    def __init__(self, slot: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("port", "serial")
    PORT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    port: int
    serial: int
    def __init__(self, port: _Optional[int] = ..., serial: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("version", "message", "resource_names", "time")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    version: str
    message: str
    resource_names: _containers.RepeatedScalarFieldContainer[str]
    time: float
    def __init__(self, version: _Optional[str] = ..., message: _Optional[str] = ..., resource_names: _Optional[_Iterable[str]] = ..., time: _Optional[float] = ...) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "version_sent", "version_acked", "last_rejection")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    LAST_REJECTION_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version_sent: str
    version_acked: str
    last_rejection: Rejection
    def __init__(self, type_url: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., last_rejection: _Optional[_Union[Rejection, _Mapping]] = ...) -> None: ...

class StreamStatus(_message.Message):
    __slots__ = ("stream_id", "protocol", "address", "connected_since", "node_id", "has_node_id", "accepted", "has_team", "team", "types")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    HAS_TEAM_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    protocol: str
    address: str
    connected_since: float
    node_id: str
    has_node_id: bool
    accepted: bool
    has_team: bool
    team: str
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    def __init__(self, stream_id: _Optional[int] = ..., protocol: _Optional[str] = ..., address: _Optional[str] = ..., connected_since: _Optional[float] = ..., node_id: _Optional[str] = ..., has_node_id: _Optional[bool] = ..., accepted: _Optional[bool] = ..., has_team: _Optional[bool] = ..., team: _Optional[str] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("full", "upserted", "removed", "serial", "groups")
    FULL_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    full: bool
    upserted: _containers.RepeatedCompositeFieldContainer[StreamStatus]
    removed: _containers.RepeatedScalarFieldContainer[int]
    serial: int
    groups: _containers.RepeatedCompositeFieldContainer[StatusGroup]
    def __init__(self, full: _Optional[bool] = ..., upserted: _Optional[_Iterable[_Union[StreamStatus, _Mapping]]] = ..., removed: _Optional[_Iterable[int]] = ..., serial: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[StatusGroup, _Mapping]]] = ...) -> None: ...

class StatusGroup(_message.Message):
    __slots__ = ("type_url", "version_sent", "version_acked", "stream_ids")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    STREAM_IDS_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version_sent: str
    version_acked: str
    stream_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, type_url: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., stream_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class AuthRequest(_message.Message):
    __slots__ = ("request_id", "authorization", "peer")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    authorization: str
    peer: str
    def __init__(self, request_id: _Optional[int] = ..., authorization: _Optional[str] = ..., peer: _Optional[str] = ...) -> None: ...

class Counter(_message.Message):
    __slots__ = ("name", "labels", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    value: float
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., value: _Optional[float] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Counter]
    def __init__(self, samples: _Optional[_Iterable[_Union[Counter, _Mapping]]] = ...) -> None: ...

class NackReport(_message.Message):
    __slots__ = ("node", "type_url", "version", "message", "resource_names")
    NODE_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    node: str
    type_url: str
    version: str
    message: str
    resource_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., type_url: _Optional[str] = ..., version: _Optional[str] = ..., message: _Optional[str] = ..., resource_names: _Optional[_Iterable[str]] = ...) -> None: ...

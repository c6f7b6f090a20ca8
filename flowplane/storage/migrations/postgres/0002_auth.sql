-- Teams, API tokens (JWTs whose ids are stored), signing keys, and the audit log.
CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    description TEXT,
    quotas      TEXT NOT NULL DEFAULT '{}',
    version     BIGINT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT,
    scopes       TEXT NOT NULL,
    teams        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    expires_at   TEXT,
    created_by   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    last_used_at TEXT,
    version      BIGINT NOT NULL
);
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    active      INTEGER NOT NULL
);
CREATE TABLE audit (
    id             BIGSERIAL PRIMARY KEY,
    time           TEXT NOT NULL,
    actor_id       TEXT,
    actor_name     TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_name  TEXT,
    team           TEXT,
    before         TEXT,
    after          TEXT,
    client_address TEXT
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_resource ON audit (resource_type, time);

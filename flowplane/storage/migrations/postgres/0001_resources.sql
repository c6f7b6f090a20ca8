-- Native resources: clusters, route configs, listeners. `spec` is the client's JSON, verbatim.
CREATE TABLE resources (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    team        TEXT,
    version     BIGINT NOT NULL CHECK (version >= 1),
    source      TEXT    NOT NULL CHECK (source IN ('native', 'platform')),
    spec        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX resources_by_team ON resources (kind, team);

-- Names are unique within a team (api.md Conventions): a resource's key is its xDS name,
-- `<team>/<name>` for a team's resource, the bare name for a shared one. SQLite cannot change a
-- primary key in place: the table is rebuilt (in this migration's one transaction).
CREATE TABLE resources_0005 (
    kind        TEXT    NOT NULL,
    xds_name    TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    team        TEXT,
    version     INTEGER NOT NULL CHECK (version >= 1),
    source      TEXT    NOT NULL CHECK (source IN ('native', 'platform')),
    spec        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    owner       TEXT,
    PRIMARY KEY (kind, xds_name)
);
INSERT INTO resources_0005
    (kind, xds_name, name, team, version, source, spec, created_at, updated_at, owner)
SELECT kind, CASE WHEN team IS NULL THEN name ELSE team || '/' || name END, name, team,
       version, source, spec, created_at, updated_at, owner
FROM resources;
DROP TABLE resources;
ALTER TABLE resources_0005 RENAME TO resources;
CREATE INDEX resources_by_team ON resources (kind, team);

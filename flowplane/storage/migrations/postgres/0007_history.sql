-- Schema versions: the shape of each stored document's JSON (api.md "History and rollback").
-- Documents stored before this migration are the first shape, version 1.
ALTER TABLE resources ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE apis ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
-- Every version of every resource and API definition, inserted in the transaction of the write
-- that made it. `kind` is a Native kind or 'api'; `name` a resource's name or an API's id;
-- `team` null for shared. A deletion is a version of its own with a null `spec`. Kept after
-- the resource is deleted (rollback re-creates it); pruned to FLOWPLANE_HISTORY_KEEP versions
-- per resource by a background job.
CREATE TABLE history (
    id BIGSERIAL PRIMARY KEY,
    kind           TEXT    NOT NULL,
    team           TEXT,
    name           TEXT    NOT NULL,
    version        BIGINT NOT NULL CHECK (version >= 1),
    action         TEXT    NOT NULL,
    actor_id       TEXT,
    actor_name     TEXT,
    at             TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    source         TEXT,
    owner          TEXT,
    spec           TEXT
);
-- (kind, team, name, version) identifies a version; a shared resource's team is null, which a
-- plain unique index would not compare, hence the COALESCE ('' is not a valid team name).
CREATE UNIQUE INDEX history_key ON history (kind, COALESCE(team, ''), name, version);
-- What is stored now is the first version history knows of each resource and API.
INSERT INTO history (kind, team, name, version, action, at, schema_version, source, owner, spec)
SELECT kind, team, name, version, CASE WHEN version = 1 THEN 'create' ELSE 'update' END,
       updated_at, schema_version, source, owner, spec
FROM resources;
INSERT INTO history (kind, team, name, version, action, at, schema_version, source, spec)
SELECT 'api', team, id, version, CASE WHEN version = 1 THEN 'create' ELSE 'update' END,
       updated_at, schema_version, 'platform', spec
FROM apis;

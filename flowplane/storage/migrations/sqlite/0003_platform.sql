-- The Platform API: API definitions (the client's JSON in `spec`, what it generated in
-- `generated`), and which API owns a Native resource (null: made on the Native API).
CREATE TABLE apis (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    team        TEXT,
    version     INTEGER NOT NULL CHECK (version >= 1),
    spec        TEXT NOT NULL,
    generated   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX apis_by_team ON apis (team, name);
ALTER TABLE resources ADD COLUMN owner TEXT;

-- One row per committed write transaction, inserted inside that transaction: when a commit's
-- outcome is unknown (the connection was lost during COMMIT), the presence of its id on another
-- connection tells whether it committed. Rows older than a day are pruned by later writes.
CREATE TABLE write_log (
    id            TEXT PRIMARY KEY,
    committed_at  TEXT NOT NULL
);
CREATE INDEX write_log_by_time ON write_log (committed_at);

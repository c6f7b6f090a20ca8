-- The change feed between replicas sharing this database (README "Replicas"): one row per
-- committed write that changed configuration or auth state, appended inside that write's
-- transaction (so the row exists if and only if the write committed). `entries` lists what the
-- write touched (JSON: [["resource", kind, xds_name] | [table, key], ...]); `origin` is the
-- replica that wrote it (it skips its own rows). Writers take a transaction-level advisory lock
-- before appending, so positions commit in increasing order and a reader that has seen position
-- N has seen every write before it.
CREATE TABLE change_log (
    position    BIGSERIAL PRIMARY KEY,
    origin      TEXT NOT NULL,
    entries     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX change_log_by_time ON change_log (created_at);

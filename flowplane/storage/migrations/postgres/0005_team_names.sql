-- Names are unique within a team (api.md Conventions): a resource's key is its xDS name,
-- `<team>/<name>` for a team's resource, the bare name for a shared one.
ALTER TABLE resources ADD COLUMN xds_name TEXT;
UPDATE resources SET xds_name = CASE WHEN team IS NULL THEN name ELSE team || '/' || name END;
ALTER TABLE resources ALTER COLUMN xds_name SET NOT NULL;
ALTER TABLE resources DROP CONSTRAINT resources_pkey;
ALTER TABLE resources ADD PRIMARY KEY (kind, xds_name);

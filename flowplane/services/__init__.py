"""The operations every edge calls (REST today; the Platform API, the CLI's server side, an MCP
server and a web UI next): each takes an explicit caller — the authenticated `Principal` — checks
its scope and team rules, and returns domain values or raises the project's error tree
(`flowplane.errors`). No HTTP here: an edge parses its input, calls one operation, renders the
result. Writes go through the config actor; reads come from the committed in-memory state."""

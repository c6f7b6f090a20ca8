"""Tokens, signing keys and the `Authenticator`: who the caller is, for every edge (REST, xDS,
and later the CLI's and MCP's servers). The rules of what a principal may do are pure domain
(`flowplane.domain.auth`); the transactions that change tokens live in `flowplane.actors.auth`."""

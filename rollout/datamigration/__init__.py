"""Data migrations (issue 15, docs/migrations.md): migration flags' stages, what SDKs report about
their reads and writes (per origin and operation, consistency, divergences), reconciliation and
readiness. Writes go through the action layer like every other change."""

"""Every write to rollout's models goes through these functions (validated, atomic, audited)."""

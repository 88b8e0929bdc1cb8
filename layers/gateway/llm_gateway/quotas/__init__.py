"""Provider quotas: the deployments that serve each model, their declared limits, and what the providers'
rate-limit headers say is left (issue 19)."""

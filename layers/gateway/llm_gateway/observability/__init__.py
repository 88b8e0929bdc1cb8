"""What an operator looks at: metrics with dimensions (:mod:`.metrics`), trace spans (:mod:`.spans`,
no-op in the core until the edge installs a tracer, :mod:`.tracing`)."""

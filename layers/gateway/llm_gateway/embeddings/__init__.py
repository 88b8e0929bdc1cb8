"""``POST /v1/embeddings``: the embedding models of the catalog, batched, cached per input and accounted.

``adapters`` speaks each provider's embedding API over the chat adapters' HTTP machinery (timeouts, error
mapping, Bedrock's signatures); ``cache`` keeps one vector per (tenant, model, dimensions, text) in the
response cache's backend; ``operation`` routes, batches, retries, falls back (between models of the same
vector length only) and accounts like a completion.
"""

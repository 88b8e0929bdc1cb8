"""Summaries of documents of any length, inside the gateway: stuff, map-reduce and refine.

- ``stuff``: the document fits one call (one chunk), so it is summarized in one call.
- ``map_reduce``: the chunks are summarized in parallel (``asyncio.Semaphore(concurrency)`` on the
  shared loop and HTTP client), then the notes are combined; notes too long for one call are first
  collapsed group by group, recursively, until they fit.
- ``refine`` (on request): a running summary is rewritten with each chunk in turn, in document order.

``auto`` picks ``stuff`` when the document fits one call of the chosen model (its context window less
the prompt and the answer) and stays under ``stuff_max_tokens``, a ceiling for quality (long inputs
dilute a single call's attention); otherwise ``map_reduce`` over chunks of at most ``max_chunk_tokens``.

Every model call is a deterministic ``CompletionRequest`` (temperature 0, the prompt version in
``prompt_version``), so the gateway's response cache serves the chunks of a retried document without
paying for them twice. Time is checked against the invocation's deadline in one of two ways:

* resumable (the default: jobs, S3 uploads, direct invocation): calls start while one more is expected
  to finish in time; then :class:`DeadlineExceededError` is raised with the progress made. Finished calls
  are cached, so the next attempt (the job's next delivery) starts where this one stopped. A run that has
  paid for nothing yet starts one wave whatever the estimate (given ``PROGRESS_FLOOR_S``), so that every
  attempt makes progress; estimates are also capped at the gateway's per-call timeout.
* ``plan_ahead`` (synchronous HTTP): each phase is estimated as a whole and refused before spending
  anything when it cannot finish, so that the caller quickly gets a job instead of a long wait.

When every provider is down and the caller allows it, an extractive summary (no model) is returned,
marked ``degraded``.
"""

"""A Lambda runtime loop that can stream HTTP answers, for the python3.12 managed runtime.

The managed Python runtime buffers a handler's answer; API Gateway's streaming integration
(``ResponseTransferMode: STREAM``) needs Lambda's streaming response mode. ``wrapper`` (named by
``AWS_LAMBDA_EXEC_WRAPPER``) replaces the managed loop with :mod:`.runtime`, which speaks the Lambda
Runtime API itself (stdlib ``http.client``) and writes each answer in API Gateway's streaming format.
See docs/streaming.md.
"""

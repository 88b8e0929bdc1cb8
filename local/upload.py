"""Upload a document to the running local stack's bucket and print what the functions made of it.

``make upload FILE=events/documents/q3-board-update.md`` (``python -m local.upload FILE``) puts the file
under ``incoming/summarize/`` (or ``incoming/extract/<schema>/`` with ``SCHEMA=invoice``, or any ``KEY``),
where the bucket's notification invokes the summarization (or extraction) function, exactly as an S3
upload does on AWS. It then waits for ``results/...json`` (or ``errors/...json``) and prints it. The
stack is found through ``make run``'s state file (local/state.py); no AWS CLI or variables are needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from local import state

INCOMING = "incoming/"
POLL_INTERVAL_S = 0.5


def upload_key(file: Path, key: str | None, schema: str | None) -> str:
    if key:
        return key
    if schema:
        return f"{INCOMING}extract/{schema}/{file.name}"
    return f"{INCOMING}summarize/{file.name}"


def output_keys(key: str) -> tuple[str, str]:
    """(result key, error key) the upload handlers write for ``incoming/<kind>/<path>``."""
    relative = key.removeprefix(INCOMING)
    return f"results/{relative}.json", f"errors/{relative}.json"


def wait_for_output(s3: Any, bucket: str, key: str, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
    """("result" | "error", the JSON object) once the handler wrote one, or None after ``timeout_s``."""
    result_key, error_key = output_keys(key)
    deadline = time.monotonic() + timeout_s
    while True:
        for kind, candidate in (("result", result_key), ("error", error_key)):
            try:
                body = s3.get_object(Bucket=bucket, Key=candidate)["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            return kind, json.loads(body)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.upload", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="the document (text, Markdown, HTML or PDF)")
    parser.add_argument("--key", help="object key (default: incoming/summarize/<file name>)")
    parser.add_argument("--schema", help="extract with this schema instead: incoming/extract/<schema>/<file name>")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the result (0: do not wait)")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"no such file: {args.file}")
    key = upload_key(args.file, args.key, args.schema)
    if not key.startswith(INCOMING):
        print(f"note: {key} is outside {INCOMING}: no function is notified for it", file=sys.stderr)

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        local = state.running(state.state_file())
        if local is None or not local.bucket:
            raise state.NoTarget(state.NOT_RUNNING)
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=local.moto_url,
            region_name=local.region,
            aws_access_key_id=local.access_key_id,
            aws_secret_access_key=local.secret_access_key,
        )
        s3.put_object(Bucket=local.bucket, Key=key, Body=args.file.read_bytes())
        print(f"uploaded s3://{local.bucket}/{key}", file=sys.stderr, flush=True)
        if args.wait <= 0:
            return 0
        output = wait_for_output(s3, local.bucket, key, args.wait)
    except (state.NoTarget, BotoCoreError, ClientError) as exc:
        return state.exit_without_traceback(exc)
    if output is None:
        print(f"error: no result for {key} after {args.wait:g} s (see make run's log)", file=sys.stderr)
        return 1
    kind, body = output
    print(json.dumps(body, indent=2))
    return 0 if kind == "result" else 1


if __name__ == "__main__":
    sys.exit(main())

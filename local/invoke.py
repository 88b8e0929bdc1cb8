"""Invoke one handler locally on an event: ``python -m local.invoke --function completion --event FILE``.

Starts moto and the provider simulator (no HTTP bridge), runs the handler in-process and prints its
response as JSON on stdout. Handler logs go to stderr. The stack starts empty, so for an S3 event the
object it names is put into the bucket first, from the sample document of the same name in
``documents/`` next to the event file (spaces in the key's file name are hyphens there: the key
``incoming/extract/entities/2026/11/acme invoice 0042.txt`` comes from ``events/documents/acme-invoice-0042.txt``).
``--put KEY=FILE`` uploads other files instead, e.g.::

    python -m local.invoke --function extraction --event my-event.json --put "incoming/extract/invoice/a.txt=a.txt"

 A raised error prints
``{"errorType": ..., "errorMessage": ...}`` (as Lambda reports it) and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from local.stack import DEFAULT_TEMPLATE, LocalStack
from local.stack.settings import SAMPLE_EVENT_KEY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.invoke", description=__doc__)
    parser.add_argument("--function", required=True, help="logical id (CompletionFunction) or directory (completion)")
    parser.add_argument("--event", required=True, help="event JSON file, or - for stdin")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--simulate", action="store_true", help="simulate every provider, even with real keys")
    parser.add_argument(
        "--put", action="append", default=[], metavar="KEY=FILE", help="upload FILE to the bucket first (repeatable)"
    )
    args = parser.parse_args(argv)
    uploads = [_parse_put(parser, item) for item in args.put]
    try:
        event = _read_event(args.event)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read the event: {exc}")

    out = sys.stdout
    # stdout carries only the response: the stack's and the handler's output go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        stack = LocalStack(args.template, bridge=False, event_sources=False, simulate=True if args.simulate else None)
        try:
            stack.start()
            stack.function_id(args.function)  # fail early on a typo, before the handler runs
            stack.add_api_key(SAMPLE_EVENT_KEY, "dev")  # the key the sample API events send
            _upload(stack, uploads or _sample_documents(stack, event, args.event))
            result = stack.invoke(args.function, event)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            print(json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}), file=out)
            return 1
        finally:
            stack.stop()
    print(json.dumps(result, indent=2, default=str), file=out)
    return 0


def _parse_put(parser: argparse.ArgumentParser, item: str) -> tuple[str, Path]:
    key, sep, file = item.rpartition("=")
    if not sep or not key or not Path(file).is_file():
        parser.error(f"--put wants KEY=FILE with an existing file, got {item!r}")
    return key, Path(file)


def _upload(stack: LocalStack, uploads: list[tuple[str, Path]]) -> None:
    if not uploads:
        return
    buckets = list(stack.template.resources_of_type("AWS::S3::Bucket"))
    if len(buckets) != 1:
        raise ValueError(f"--put needs exactly one S3 bucket in the template, found {buckets}")
    s3 = stack.client("s3")
    for key, file in uploads:
        s3.put_object(Bucket=stack.physical[buckets[0]], Key=key, Body=file.read_bytes())


def _sample_documents(stack: LocalStack, event: Any, event_source: str) -> list[tuple[str, Path]]:
    """(key, file) for each S3 record of ``event`` whose sample document exists next to the event file."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or event_source == "-":
        return []
    documents = Path(event_source).resolve().parent / "documents"
    found = []
    for record in records:
        s3 = record.get("s3") if isinstance(record, dict) else None
        if not isinstance(s3, dict):
            continue
        key = unquote_plus(str(s3.get("object", {}).get("key", "")))  # keys arrive URL-encoded, as in AWS
        name = PurePosixPath(key).name
        candidates = [documents / name, documents / name.replace(" ", "-")]
        sample = next((path for path in candidates if name and path.is_file()), None)
        if sample is None:
            print(f"note: no sample document for s3 key {key!r} in {documents}; not uploaded", file=sys.stderr)
            continue
        found.append((key, sample))
    return found


def _read_event(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text) if text.strip() else {}


if __name__ == "__main__":
    sys.exit(main())

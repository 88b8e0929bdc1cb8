"""Move messages from the retry dead-letter queue back to the retry queue: ``make redrive``.

Works against AWS, a local moto server (``AWS_ENDPOINT_URL``), or, when no AWS target is set at all,
the running ``make run`` (its queues are in ``.local/stack.json``, see local/state.py).
Each message is sent to the retry queue first and deleted from the dead-letter queue only after that
succeeded, so an interruption can at worst leave a copy in both (the retry worker processes a job once
however often it is delivered), never lose one. A redriven job message reopens its job if the job had
failed because its retries ran out.

Job messages get here two ways, and their job is marked failed (with the reason) either way: the retry
worker moves a message itself after its job's last allowed delivery (attribute ``gateway-gave-up`` with
the reason), and the queue's redrive policy moves one whose extra settling delivery also died.

Messages the worker set aside as poison (attribute ``gateway-poison``: not JSON, unknown job...) stay
in the dead-letter queue unless ``--include-poison`` is given: they would only be set aside again.

SQS also offers StartMessageMoveTask (the console's "Start DLQ redrive"); it works with this worker too,
but moto does not implement it and it cannot leave poison messages behind, hence this tool.

Queues: ``--queue-url``/``--dlq-url``, else ``RETRY_QUEUE_URL``/``RETRY_DLQ_URL``, else the outputs of
``--stack-name`` (RetryQueueUrl, RetryDeadLetterQueueUrl); the dead-letter queue can also be found from
the retry queue's redrive policy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from local import state

POISON_ATTRIBUTE = "gateway-poison"  # llm_gateway.jobs.endings.POISON_ATTRIBUTE (no layer import needed here)
GAVE_UP_ATTRIBUTE = "gateway-gave-up"  # llm_gateway.jobs.endings.DEAD_LETTER_ATTRIBUTE: dropped when moved back
RECEIVE_VISIBILITY_S = 60  # a message being moved is hidden this long; plenty for one send + delete


@dataclass
class RedriveReport:
    found: int = 0  # messages in the dead-letter queue when the run started (approximate, from SQS)
    moved: int = 0
    left_poison: int = 0
    moved_ids: list[str] = field(default_factory=list)

    def summary(self, dlq_url: str, queue_url: str) -> str:
        return (
            f"moved {self.moved} message(s) from {dlq_url} to {queue_url}; "
            f"left {self.left_poison} poison message(s) in the dead-letter queue (about {self.found} were there)"
        )


def redrive(
    sqs: Any,
    *,
    dlq_url: str,
    queue_url: str,
    include_poison: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
) -> RedriveReport:
    """Move up to ``limit`` messages (default: as many as were in the DLQ at the start)."""
    report = RedriveReport(found=_approximate_count(sqs, dlq_url))
    budget = report.found if limit is None else limit
    if dry_run or budget <= 0:
        return report
    skipped: list[str] = []  # receipt handles of poison messages left behind, made visible again at the end
    empty_polls = 0
    try:
        while report.moved + len(skipped) < budget and empty_polls < 2:
            messages = sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=min(10, budget - report.moved - len(skipped)),
                WaitTimeSeconds=1,
                VisibilityTimeout=RECEIVE_VISIBILITY_S,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            empty_polls = 0 if messages else empty_polls + 1
            for message in messages:
                attributes = message.get("MessageAttributes") or {}
                if POISON_ATTRIBUTE in attributes and not include_poison:
                    skipped.append(message["ReceiptHandle"])
                    continue
                sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"], **_resend_attributes(attributes))
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                report.moved += 1
                report.moved_ids.append(message["MessageId"])
    finally:
        for handle in skipped:
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=handle, VisibilityTimeout=0)
        report.left_poison = len(skipped)
    return report


def _resend_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for name, value in attributes.items():
        if name in (POISON_ATTRIBUTE, GAVE_UP_ATTRIBUTE):
            continue
        kept[name] = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if k in value}
    return {"MessageAttributes": kept} if kept else {}


def _approximate_count(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", 0))


def resolve_queues(sqs: Any, cloudformation: Any, args: argparse.Namespace) -> tuple[str, str]:
    queue_url = args.queue_url or os.environ.get("RETRY_QUEUE_URL")
    dlq_url = args.dlq_url or os.environ.get("RETRY_DLQ_URL")
    if args.stack_name and not (queue_url and dlq_url):
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cloudformation.describe_stacks(StackName=args.stack_name)["Stacks"][0].get("Outputs", [])
        }
        queue_url = queue_url or outputs.get("RetryQueueUrl")
        dlq_url = dlq_url or outputs.get("RetryDeadLetterQueueUrl")
    if queue_url and not dlq_url:
        policy = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
        if "RedrivePolicy" in policy:
            dlq_arn = json.loads(policy["RedrivePolicy"])["deadLetterTargetArn"]
            _, _, _, _, account, name = dlq_arn.split(":", 5)
            dlq_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    if not queue_url or not dlq_url:
        raise state.NoTarget(
            "name the queues: --queue-url and --dlq-url (or RETRY_QUEUE_URL / RETRY_DLQ_URL), or --stack-name"
        )
    return queue_url, dlq_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.redrive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue-url", help="the retry queue (destination)")
    parser.add_argument("--dlq-url", help="the dead-letter queue (source)")
    parser.add_argument("--stack-name", help="read both URLs from this CloudFormation stack's outputs")
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="e.g. a moto server")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--max", type=int, default=None, help="move at most this many (default: all present)")
    parser.add_argument("--include-poison", action="store_true", help="also move messages set aside as poison")
    parser.add_argument("--dry-run", action="store_true", help="only count the dead-letter queue's messages")
    args = parser.parse_args(argv)

    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if not (args.endpoint_url or args.region or args.stack_name or (args.queue_url and args.dlq_url)):
            local = state.use_local_stack_if_no_target()  # sets the endpoint, region and both queue URLs
            if local is not None:
                args.endpoint_url, args.region = local.moto_url, local.region
        session = boto3.session.Session(region_name=args.region)
        config = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "total_max_attempts": 5})
        sqs = session.client("sqs", endpoint_url=args.endpoint_url, config=config)
        cloudformation = session.client("cloudformation", endpoint_url=args.endpoint_url, config=config)
        queue_url, dlq_url = resolve_queues(sqs, cloudformation, args)
        report = redrive(
            sqs,
            dlq_url=dlq_url,
            queue_url=queue_url,
            include_poison=args.include_poison,
            limit=args.max,
            dry_run=args.dry_run,
        )
    except (state.NoTarget, BotoCoreError, ClientError) as exc:
        return state.exit_without_traceback(exc)
    if args.dry_run:
        print(f"{report.found} message(s) in {dlq_url} (dry run: nothing moved)")
    else:
        print(report.summary(dlq_url, queue_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())

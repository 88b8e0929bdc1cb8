"""The moto server and the template's resources on it (tables, queues, buckets, secrets, SNS topics)."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

from local.cfn import API_TYPES, FUNCTION_TYPES, dependency_order, to_env_value
from local.context import ACCOUNT_ID, REGION
from local.stack.moto_patches import _make_moto_dynamodb_atomic
from local.stack.settings import _AWS_VARS_TO_CLEAR, log


class ProvisioningMixin:
    """Starts moto and creates (then deletes) the template's resources there."""

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per AWS call
        _make_moto_dynamodb_atomic()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        _, port = self._moto.get_host_and_port()
        self.moto_url = f"http://127.0.0.1:{port}"
        for name in _AWS_VARS_TO_CLEAR:
            self._set_env(name, None)
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
            self._set_env(name, None)  # service-specific endpoints would win over ours
        self._set_env("AWS_ACCESS_KEY_ID", "testing")
        self._set_env("AWS_SECRET_ACCESS_KEY", "testing")
        self._set_env("AWS_DEFAULT_REGION", REGION)
        self._set_env("AWS_REGION", REGION)
        self._set_env("AWS_CONFIG_FILE", os.devnull)  # nothing from ~/.aws can point elsewhere
        self._set_env("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        self._set_env("AWS_ENDPOINT_URL", self.moto_url)
        self._set_env("MOTO_PORT", str(port))  # moto's Step Functions calls back through it

    def _create_resources(self) -> None:
        creators: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::SecretsManager::Secret": self._create_secret,
            # Budget alerts really publish locally; subscribe a queue to the topic to read them.
            "AWS::SNS::Topic": self._create_topic,
        }
        wanted = [
            lid
            for lid, res in self.template.resources.items()
            if res.get("Type") in creators and self._condition_holds(res)
        ]
        for lid in dependency_order(self.template, wanted):
            props = self.resolver.resolve(self.template.properties(lid))
            creators[self.template.resources[lid]["Type"]](lid, props)

    def _condition_holds(self, resource: dict[str, Any]) -> bool:
        name = resource.get("Condition")
        return True if name is None else self.resolver.condition(str(name))

    def _create_table(self, lid: str, props: dict[str, Any]) -> None:
        ddb = self._aws("dynamodb")
        name = str(props.get("TableName") or self._name(lid))
        billing = props.get("BillingMode", "PROVISIONED")
        default_throughput = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        args: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": billing,
        }
        if billing == "PROVISIONED":
            args["ProvisionedThroughput"] = props.get("ProvisionedThroughput") or default_throughput
        index_keys = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")
        if gsis := props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = [{k: g[k] for k in index_keys if k in g} for g in gsis]
            if billing == "PROVISIONED":
                for gsi in args["GlobalSecondaryIndexes"]:
                    gsi.setdefault("ProvisionedThroughput", default_throughput)
        if lsis := props.get("LocalSecondaryIndexes"):
            args["LocalSecondaryIndexes"] = [{k: i[k] for k in index_keys[:3] if k in i} for i in lsis]
        if stream := props.get("StreamSpecification"):
            args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        if tags := props.get("Tags"):
            args["Tags"] = tags
        table = ddb.create_table(**args)["TableDescription"]
        self._created.append(("AWS::DynamoDB::Table", name))
        ttl = props.get("TimeToLiveSpecification") or {}
        if ttl.get("Enabled") in (True, "true", "True"):
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
            )
        self._record(lid, name, Arn=table["TableArn"], StreamArn=table.get("LatestStreamArn"))

    _QUEUE_ATTRIBUTES = (
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "DelaySeconds",
        "FifoQueue",
        "FifoThroughputLimit",
        "KmsDataKeyReusePeriodSeconds",
        "KmsMasterKeyId",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "RedriveAllowPolicy",
        "RedrivePolicy",
        "SqsManagedSseEnabled",
        "VisibilityTimeout",
    )

    def _create_queue(self, lid: str, props: dict[str, Any]) -> None:
        fifo = str(props.get("FifoQueue", "")).lower() == "true"
        name = str(props.get("QueueName") or self._name(lid) + (".fifo" if fifo else ""))
        attributes = {k: to_env_value(props[k]) for k in self._QUEUE_ATTRIBUTES if k in props}
        url, arn = self._make_queue(name, attributes)
        self._record(lid, url, Arn=arn, QueueName=name, QueueUrl=url)

    def _make_queue(self, name: str, attributes: dict[str, str]) -> tuple[str, str]:
        sqs = self._aws("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self._created.append(("AWS::SQS::Queue", url))
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def _create_bucket(self, lid: str, props: dict[str, Any]) -> None:
        s3 = self._aws("s3")
        name = str(props.get("BucketName") or self._name(lid).lower())
        s3.create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
        self._created.append(("AWS::S3::Bucket", name))
        if status := (props.get("VersioningConfiguration") or {}).get("Status"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        self._record(
            lid,
            name,
            Arn=f"arn:aws:s3:::{name}",
            DomainName=f"{name}.s3.amazonaws.com",
            RegionalDomainName=f"{name}.s3.{REGION}.amazonaws.com",
            WebsiteURL=f"http://{name}.s3-website-{REGION}.amazonaws.com",
        )

    def _create_secret(self, lid: str, props: dict[str, Any]) -> None:
        name = str(props.get("Name") or self._name(lid))
        value = props.get("SecretString")
        if value is None:
            value = _generated_secret(props.get("GenerateSecretString") or {})
        args = {"Name": name, "SecretString": to_env_value(value)}
        if description := props.get("Description"):
            args["Description"] = str(description)
        arn = self._aws("secretsmanager").create_secret(**args)["ARN"]
        self._created.append(("AWS::SecretsManager::Secret", arn))
        self._record(lid, arn, Id=arn)

    def _create_topic(self, lid: str, props: dict[str, Any]) -> None:
        name = str(props.get("TopicName") or self._name(lid))
        attributes = {"DisplayName": str(props["DisplayName"])} if props.get("DisplayName") else {}
        arn = self._aws("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        self._created.append(("AWS::SNS::Topic", arn))
        self._record(lid, arn, TopicArn=arn, TopicName=name)

    def _record(self, lid: str, ref: str, **attrs: str | None) -> None:
        self.physical[lid] = ref
        self._attrs.update({(lid, k): v for k, v in attrs.items() if v is not None})

    def _delete_resources(self) -> None:
        """moto's state is process-wide: leave nothing behind for the next stack or mock_aws test."""
        deleters: dict[str, Callable[[str], None]] = {
            "AWS::DynamoDB::Table": lambda n: self._aws("dynamodb").delete_table(TableName=n),
            "AWS::SQS::Queue": lambda n: self._aws("sqs").delete_queue(QueueUrl=n),
            "AWS::S3::Bucket": self._delete_bucket,
            "AWS::SecretsManager::Secret": lambda n: self._aws("secretsmanager").delete_secret(
                SecretId=n, ForceDeleteWithoutRecovery=True
            ),
            "AWS::SNS::Topic": lambda n: self._aws("sns").delete_topic(TopicArn=n),
        }
        for rtype, ref in reversed(self._created):
            try:
                deleters[rtype](ref)
            except Exception as exc:  # best effort: the server stops right after
                log.warning("could not delete %s %s: %s", rtype, ref, exc)
        self._created.clear()

    def _delete_bucket(self, name: str) -> None:
        s3 = self._aws("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
        s3.delete_bucket(Bucket=name)

    def _name(self, lid: str) -> str:
        return f"{self.stack_name}-{lid}"

    def _pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
        }

    def _placeholder(self, lid: str, attr: str | None) -> str:
        """Values for resources the harness does not create (functions, APIs, policies, layers...)."""
        rtype = self.template.resource_type(lid) or "AWS::Local::Resource"
        name = self._name(lid)
        if rtype in FUNCTION_TYPES or rtype == "AWS::Lambda::Function":
            return name if attr is None else f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        if rtype in API_TYPES or rtype == "AWS::ApiGateway::RestApi":
            return lid.lower()[:10] if attr is None else "root"
        service = rtype.split("::")[1].lower()
        arn = f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{name}"
        return arn if attr in (None, "Arn") or rtype.endswith("Policy") else f"{arn}/{attr}"


def _generated_secret(spec: dict[str, Any]) -> str:
    password = secrets.token_urlsafe(int(spec.get("PasswordLength", 32)))[: int(spec.get("PasswordLength", 32))]
    if template := spec.get("SecretStringTemplate"):
        data = json.loads(template)
        data[spec.get("GenerateStringKey", "password")] = password
        return json.dumps(data)
    return password

"""``make keys`` against a running ``make run`` (a real ``python -m local.run`` process found through its
state file): create, list, show, rotate, revoke; the secret is printed once and only by create/rotate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llm_gateway.config import Settings
from llm_gateway.errors import InvalidApiKeyError
from llm_gateway.keys import KeyService
from llm_gateway.keys.store import KeyStore
from tests.integration.test_local_run import RunningStack, make, moto_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("keys-cli")
    stack = RunningStack(directory / "stack.json", directory / "run.log")
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            stack.stop()


def verifier(running: RunningStack) -> KeyService:
    table = running.state.tables["KeysTable"]
    store = KeyStore(table, client=lambda: moto_client(running.state, "dynamodb"))
    return KeyService(Settings(keys_table=table), store=store)


def test_make_keys_manages_keys_on_the_running_stack(running: RunningStack) -> None:
    state_file = running.state_file
    done = make(
        "keys", state_file, "ACTION=create", "TENANT=cli-tenant", "KEYS_ARGS=--name ci --models tier:fast --rpm 5"
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    secret, key_id = created["key"], created["id"]
    assert "shown once" in done.stderr
    assert created["allowed_models"] == ["tier:fast"] and created["requests_per_minute"] == 5
    assert verifier(running).authenticate({"Authorization": f"Bearer {secret}"}).tenant == "cli-tenant"
    # The key works through the running stack's bridge and edge with nothing but the openai client's key,
    # and so does the LOCAL_API_KEYS key `make run` prints.
    for key in (secret, next(iter(running.state.api_keys))):
        sdk = openai.OpenAI(base_url=f"{running.state.api_url}/v1", api_key=key, max_retries=0, timeout=60)
        assert sdk.chat.completions.create(model="tier:fast", messages=[{"role": "user", "content": "Hi"}]).choices

    outputs = []
    for variables in (["ACTION=list", "TENANT=cli-tenant"], ["ACTION=show", f"KEY={key_id}"]):
        shown = make("keys", state_file, *variables)
        assert shown.returncode == 0, shown.stderr
        outputs.append(shown.stdout + shown.stderr)
    assert [k["id"] for k in json.loads(outputs[0])["data"]] == [key_id]
    assert json.loads(outputs[1])["status"] == "active"

    rotated = make("keys", state_file, "ACTION=rotate", f"KEY={key_id}")
    assert rotated.returncode == 0, rotated.stderr
    new_secret = json.loads(rotated.stdout)["key"]
    revoked = make("keys", state_file, "ACTION=revoke", f"KEY={key_id}")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["status"] == "revoked"
    outputs.append(revoked.stdout + revoked.stderr)
    for secret_value in (secret, new_secret):
        with pytest.raises(InvalidApiKeyError):
            verifier(running).authenticate({"x-api-key": secret_value})
        assert not any(secret_value in text for text in outputs)
    assert secret not in running.output() and new_secret not in running.output()


def test_make_keys_errors_are_one_line(running: RunningStack, tmp_path: Path) -> None:
    missing = make("keys", running.state_file, "ACTION=show", "KEY=key_nope")
    assert missing.returncode == 2 and "error: key_not_found" in missing.stderr
    bad = make("keys", running.state_file, "ACTION=create", "TENANT=key:x")
    assert bad.returncode == 2 and "error: invalid_request" in bad.stderr and "Traceback" not in bad.stderr
    nothing = make("keys", tmp_path / "absent.json")
    assert nothing.returncode == 2 and "no local stack is running" in nothing.stderr


def test_with_an_aws_target_the_table_is_named(local_stack, capsys) -> None:
    import os

    from local import keys_cli

    environ = dict(os.environ)  # the session's local stack: AWS_ENDPOINT_URL names the target
    environ.pop("KEYS_TABLE", None)
    assert keys_cli.main(["list"], environ) == 2
    assert "give --stack-name, --table or KEYS_TABLE" in capsys.readouterr().err
    table = local_stack.physical["KeysTable"]
    assert keys_cli.main(["--table", table, "create", "--tenant", "aws-target", "--tpm", "1000"], environ) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["tenant"] == "aws-target" and created["tokens_per_minute"] == 1000
    assert keys_cli.main(["show", created["id"]], {**environ, "KEYS_TABLE": table}) == 0
    assert created["key"] not in capsys.readouterr().out


def test_a_stack_name_finds_the_tables_in_its_outputs(local_stack, capsys) -> None:
    import os

    from local import keys_cli

    stack = f"keys-cli-{os.getpid()}"
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "KeysTableName": {"Value": local_stack.physical["KeysTable"]},
            "UsageTableName": {"Value": local_stack.physical["UsageTable"]},
        },
    }
    local_stack.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    environ = dict(os.environ)
    argv = ["--stack-name", stack, "create", "--tenant", "by-stack", "--budget", "3", "--budget-window", "month"]
    assert keys_cli.main(argv, environ) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["budget"] == {"limit_usd": 3.0, "window": "month"}
    from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

    policy = DynamoDBBudgetGuard(local_stack.physical["UsageTable"]).read_policy(f"key:{created['id']}")
    assert policy is not None and (float(policy.limit_usd), policy.window) == (3.0, "month")
    assert keys_cli.main(["--stack-name", "no-such-stack", "list"], environ) == 2
    assert capsys.readouterr().err.startswith("error: ")

"""The API's flows through the client openapi-python-client generated from /openapi.json, and
nothing else: no HTTP of our own, so whatever the document gets wrong shows up here as a client
developer would meet it. Run by `make test-clients` against a live server:

    PYTHONPATH=target/clients/python target/clients/venv/bin/python scripts/clients/flows.py URL

One line per flow, then `N passed, N failed`; exit 1 when a flow failed.
"""

import sys
import uuid
from typing import TypeVar

from flowrun import Failed, check, made, run
from task_api_client import Client
from task_api_client.api.operational import health, metrics, openapi, ready
from task_api_client.api.tasks import create_task, delete_task, get_task, list_tasks, update_task
from task_api_client.models import (
    ApiError,
    Health,
    NewTask,
    OpenApiDocument,
    Readiness,
    Status,
    Task,
    TaskPatch,
)
from task_api_client.types import Response

T = TypeVar("T")
R = TypeVar("R")
NO_SUCH_TASK = 9223372036854775807  # the largest id there is; this run never gets that far


def parsed(response: Response[R], status: int, kind: type[T]) -> T:
    """The body of `response` as the generated model `kind`, after checking the status and the
    `x-request-id` every answer carries."""
    check(response.status_code == status,
          f"status {response.status_code}, expected {status}: {response.content[:200]!r}")
    check(bool(response.headers.get("x-request-id")), "no x-request-id")
    body = response.parsed
    if not isinstance(body, kind):
        raise Failed(f"body {body!r} is not {kind.__name__}")
    return body


def header(response: Response[R], name: str) -> str:
    value = response.headers.get(name)
    if value is None:
        raise Failed(f"no {name} header")
    return value


class Flows:
    """Each method is one flow; they run in order, the later ones on the task `create` made."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.title = f"client flow {uuid.uuid4()}"
        self.made: Task | None = None
        self.etag = ""
        self.stale_etag = ""

    @property
    def task(self) -> Task:
        return made(self.made)

    def create(self) -> None:
        body = NewTask(title=self.title, description="made by scripts/clients/flows.py")
        response = create_task.sync_detailed(client=self.client, body=body)
        task = parsed(response, 201, Task)
        check(task.title == self.title and task.status == Status.PENDING, f"stored as {task!r}")
        check(task.updated_at == task.created_at, "updated_at differs from created_at")
        check(header(response, "location") == f"/tasks/{task.id}", "location is not /tasks/{id}")
        check("idempotent-replayed" not in response.headers, "a first create marked replayed")
        self.etag = header(response, "etag")
        self.made = task

    def list(self) -> None:
        response = list_tasks.sync_detailed(client=self.client, status=Status.PENDING, limit=1000)
        tasks = parsed(response, 200, list)
        ids = [task.id for task in tasks if isinstance(task, Task)]
        check(len(ids) == len(tasks), "an item is not a Task")
        check(self.task.id in ids, f"task {self.task.id} not listed")
        check(ids == sorted(ids), "not in id order")
        check(all(task.status == Status.PENDING for task in tasks if isinstance(task, Task)),
              "status filter not applied")

    def get(self) -> None:
        response = get_task.sync_detailed(self.task.id, client=self.client)
        check(parsed(response, 200, Task) == self.task, "differs from what create answered")
        check(header(response, "etag") == self.etag, "etag differs from create's")

    def not_modified(self) -> None:
        response = get_task.sync_detailed(self.task.id, client=self.client, if_none_match=self.etag)
        check(response.status_code == 304, f"status {response.status_code}, expected 304")
        check(response.content == b"" and response.parsed is None, "a 304 with a body")
        check(header(response, "etag") == self.etag, "304 without the current etag")

    def patch(self) -> None:
        response = update_task.sync_detailed(
            self.task.id, client=self.client, body=TaskPatch(status=Status.COMPLETED), if_match=self.etag)
        task = parsed(response, 200, Task)
        check(task.status == Status.COMPLETED and task.title == self.title, f"patched to {task!r}")
        check(task.updated_at > task.created_at, "updated_at did not move")
        self.stale_etag, self.etag = self.etag, header(response, "etag")
        check(self.etag != self.stale_etag, "etag did not change")
        self.made = task

    def precondition_failed(self) -> None:
        response = update_task.sync_detailed(
            self.task.id, client=self.client, body=TaskPatch(title="lost update"), if_match=self.stale_etag)
        check(bool(parsed(response, 412, ApiError).detail), "412 without a detail")
        after = parsed(get_task.sync_detailed(self.task.id, client=self.client), 200, Task)
        check(after == self.task, "a failed precondition changed the task")

    def invalid(self) -> None:
        response = create_task.sync_detailed(client=self.client, body=NewTask(title=" "))
        detail = parsed(response, 422, ApiError).detail
        check(detail.startswith("title"), f"422 detail {detail!r} does not name title")
        response_list = list_tasks.sync_detailed(client=self.client, limit=0)
        detail = parsed(response_list, 422, ApiError).detail
        check(detail.startswith("limit"), f"422 detail {detail!r} does not name limit")

    def bad_request(self) -> None:
        seventeen = ", ".join(f'"{n:x}"' for n in range(17))  # at most 16 entity tags
        response = get_task.sync_detailed(self.task.id, client=self.client, if_none_match=seventeen)
        detail = parsed(response, 400, ApiError).detail
        check(detail.lower().startswith("if-none-match"), f"400 detail {detail!r} does not name the header")

    def head_too_large(self) -> None:
        token = "t" * 17 * 1024  # the head's limit is 16 KiB
        response = list_tasks.sync_detailed(client=self.client, x_consistency_token=token)
        check(bool(parsed(response, 431, ApiError).detail), "431 without a detail")

    def not_found(self) -> None:
        response = get_task.sync_detailed(NO_SUCH_TASK, client=self.client)
        check(parsed(response, 404, ApiError).detail == "Task not found", "404 detail")

    def keyed_replay(self) -> None:
        key = str(uuid.uuid4())
        body = NewTask(title=f"{self.title} (keyed)", status=Status.IN_PROGRESS)
        first = create_task.sync_detailed(client=self.client, body=body, idempotency_key=key)
        made = parsed(first, 201, Task)
        again = create_task.sync_detailed(client=self.client, body=body, idempotency_key=key)
        check(parsed(again, 201, Task) == made, "the replay differs from the first answer")
        check(header(again, "idempotent-replayed") == "true", "replay not marked idempotent-replayed")
        reused = create_task.sync_detailed(client=self.client, body=NewTask(title="other"), idempotency_key=key)
        detail = parsed(reused, 422, ApiError).detail
        check(detail.startswith("idempotency-key"), f"422 detail {detail!r} does not name the key")

    def delete(self) -> None:
        response = delete_task.sync_detailed(self.task.id, client=self.client, if_match=self.etag)
        check(response.status_code == 204 and response.content == b"", f"status {response.status_code}")
        gone = get_task.sync_detailed(self.task.id, client=self.client)
        check(parsed(gone, 404, ApiError).detail == "Task not found", "deleted task still there")

    def operational(self) -> None:
        alive = parsed(health.sync_detailed(client=self.client), 200, Health)
        check(alive.status == "healthy" and alive.service == "task-api", f"health {alive!r}")
        parsed(ready.sync_detailed(client=self.client), 200, Readiness)
        text = parsed(metrics.sync_detailed(client=self.client), 200, str)
        check("task_api_http_requests_total" in text, "metrics without task_api_http_requests_total")
        document = parsed(openapi.sync_detailed(client=self.client), 200, OpenApiDocument)
        check(document.openapi.startswith("3.1.") and "/tasks" in document.paths, "not this API's document")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: flows.py BASE_URL", file=sys.stderr)
        return 2
    # An undocumented status raises (errors.UnexpectedStatus): a failed flow, with its status.
    client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
    flows = Flows(client)
    names = ["create", "list", "get", "not_modified", "patch", "precondition_failed", "invalid",
             "bad_request", "head_too_large", "not_found", "keyed_replay", "delete", "operational"]
    with client:
        return run("python", flows, names)


if __name__ == "__main__":
    sys.exit(main())

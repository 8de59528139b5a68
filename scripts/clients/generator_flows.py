"""The API's flows through the client openapi-generator's `python` generator made from
/openapi.json (package `task_api_oag`), and nothing else. That client raises
`ApiException` on any status outside 2xx, 304 included (the document's NotModified says so),
and checks `pattern` and `minimum` itself, so a blank title never leaves it. Run by
`make test-clients` against a live server:

    PYTHONPATH=target/clients/generator/python target/clients/venv/bin/python \
        scripts/clients/generator_flows.py URL

One line per flow, then `N passed, N failed`; exit 1 when a flow failed.
"""

import sys
import uuid
from collections.abc import Callable, Mapping

from flowrun import Failed, check, made, run
from pydantic import ValidationError
from task_api_oag import ApiClient, Configuration, OperationalApi, TasksApi
from task_api_oag.exceptions import ApiException
from task_api_oag.models import ApiError, NewTask, Status, Task, TaskPatch

NO_SUCH_TASK = 9223372036854775807  # the largest id there is; this run never gets that far


def header(headers: Mapping[str, str] | None, name: str) -> str:
    value = (headers or {}).get(name)
    if value is None:
        raise Failed(f"no {name} header")
    return value


def refused(call: Callable[[], object], status: int) -> ApiException:
    """The exception the generated client raises for an error answer, after checking its status,
    its `x-request-id` and that its body parsed as the document's ApiError."""
    try:
        call()
    except ApiException as err:
        check(err.status == status, f"status {err.status}, expected {status}: {err.body!r}")
        header(err.headers, "x-request-id")
        check(status == 304 or (isinstance(err.data, ApiError) and bool(err.data.detail)),
              f"{status} body {err.body!r} is not an ApiError")
        return err
    raise Failed(f"no exception, expected {status}")


def detail(err: ApiException) -> str:
    return err.data.detail if isinstance(err.data, ApiError) else ""


class Flows:
    """Each method is one flow; they run in order, the later ones on the task `create` made."""

    def __init__(self, client: ApiClient) -> None:
        self.tasks = TasksApi(client)
        self.operational = OperationalApi(client)
        self.title = f"generator flow {uuid.uuid4()}"
        self.made: Task | None = None
        self.etag = self.stale_etag = ""

    @property
    def task(self) -> Task:
        return made(self.made)

    def create(self) -> None:
        response = self.tasks.create_task_with_http_info(NewTask(title=self.title))
        task = response.data
        check(response.status_code == 201, f"status {response.status_code}")
        check(task.title == self.title and task.status == Status.PENDING, f"stored as {task!r}")
        check(header(response.headers, "location") == f"/tasks/{task.id}", "location is not /tasks/{id}")
        self.etag, self.made = header(response.headers, "etag"), task

    def list(self) -> None:
        tasks = self.tasks.list_tasks(status=Status.PENDING, limit=1000)
        ids = [task.id for task in tasks]
        check(self.task.id in ids and ids == sorted(ids), f"task {self.task.id} not listed in id order")

    def get(self) -> None:
        response = self.tasks.get_task_with_http_info(self.task.id)
        check(response.data == self.task, "differs from what create answered")
        check(header(response.headers, "etag") == self.etag, "etag differs from create's")

    def not_modified(self) -> None:
        err = refused(lambda: self.tasks.get_task(self.task.id, if_none_match=self.etag), 304)
        check(not err.body and header(err.headers, "etag") == self.etag, "304 with a body or without the etag")

    def patch(self) -> None:
        patch = TaskPatch(status=Status.COMPLETED)
        response = self.tasks.update_task_with_http_info(self.task.id, patch, if_match=self.etag)
        check(response.data.status == Status.COMPLETED, f"patched to {response.data!r}")
        self.stale_etag, self.etag = self.etag, header(response.headers, "etag")
        check(self.etag != self.stale_etag, "etag did not change")
        self.made = response.data

    def precondition_failed(self) -> None:
        patch = TaskPatch(title="lost update")
        refused(lambda: self.tasks.update_task(self.task.id, patch, if_match=self.stale_etag), 412)
        check(self.tasks.get_task(self.task.id) == self.task, "a failed precondition changed the task")

    def invalid(self) -> None:
        try:
            NewTask(title=" ")
        except ValidationError:
            pass  # the generated model checks the title's pattern: the server never sees it
        else:
            raise Failed("the client took a blank title")
        key = str(uuid.uuid4())
        self.tasks.create_task(NewTask(title=f"{self.title} (keyed)"), idempotency_key=key)
        err = refused(lambda: self.tasks.create_task(NewTask(title="other"), idempotency_key=key), 422)
        check(detail(err).startswith("idempotency-key"), f"422 detail {detail(err)!r} does not name the key")

    def bad_request(self) -> None:
        seventeen = ", ".join(f'"{n:x}"' for n in range(17))  # at most 16 entity tags
        err = refused(lambda: self.tasks.get_task(self.task.id, if_none_match=seventeen), 400)
        check(detail(err).lower().startswith("if-none-match"), f"400 detail {detail(err)!r}")

    def head_too_large(self) -> None:
        token = "t" * 17 * 1024  # the head's limit is 16 KiB
        refused(lambda: self.tasks.list_tasks(x_consistency_token=token), 431)

    def not_found(self) -> None:
        err = refused(lambda: self.tasks.get_task(NO_SUCH_TASK), 404)
        check(detail(err) == "Task not found", f"404 detail {detail(err)!r}")

    def keyed_replay(self) -> None:
        key, body = str(uuid.uuid4()), NewTask(title=f"{self.title} (replayed)", status=Status.IN_PROGRESS)
        made = self.tasks.create_task(body, idempotency_key=key)
        again = self.tasks.create_task_with_http_info(body, idempotency_key=key)
        check(again.data == made, "the replay differs from the first answer")
        check(header(again.headers, "idempotent-replayed") == "true", "replay not marked idempotent-replayed")

    def delete(self) -> None:
        response = self.tasks.delete_task_with_http_info(self.task.id, if_match=self.etag)
        check(response.status_code == 204 and not response.raw_data, f"status {response.status_code}")
        refused(lambda: self.tasks.get_task(self.task.id), 404)

    def operational_routes(self) -> None:
        alive = self.operational.health()
        check(alive.status == "healthy" and alive.service == "task-api", f"health {alive!r}")
        check(self.operational.ready().status == "ready", "not ready")
        check("task_api_http_requests_total" in self.operational.metrics(), "metrics without requests")
        document = self.operational.openapi()
        check(document.openapi.startswith("3.1.") and "/tasks" in document.paths, "not this API's document")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: generator_flows.py BASE_URL", file=sys.stderr)
        return 2
    names = ["create", "list", "get", "not_modified", "patch", "precondition_failed", "invalid",
             "bad_request", "head_too_large", "not_found", "keyed_replay", "delete", "operational_routes"]
    with ApiClient(Configuration(host=sys.argv[1])) as client:
        return run("openapi-generator python", Flows(client), names)


if __name__ == "__main__":
    sys.exit(main())

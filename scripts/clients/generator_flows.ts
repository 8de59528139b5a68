// The API's flows through the client openapi-generator's `typescript-fetch` generator made from
// /openapi.json, and nothing else. That client throws `ResponseError` on any status outside 2xx,
// 304 included (the document's NotModified says so). Type-checked with tsc under every strict
// check (tsconfig.generator.json), then run by `make test-clients` against a live server:
//
//     node target/clients/generator/typescript/out/scripts/clients/generator_flows.js URL
//
// One line per flow, then `N passed, N failed`; exit code 1 when a flow failed.

import {
  ApiErrorFromJSON,
  Configuration,
  OperationalApi,
  ResponseError,
  Status,
  TasksApi,
  type Task,
} from "../../target/clients/generator/typescript";
import { Failed, check, header, run } from "./flowrun.cjs";

const NO_SUCH_TASK = Number.MAX_SAFE_INTEGER; // this run never gets that far

function same(a: Task, b: Task): boolean {
  return a.id === b.id && a.title === b.title && a.status === b.status &&
    a.description === b.description && a.updatedAt.getTime() === b.updatedAt.getTime();
}

/** The error answer `call` is refused with: its status and `x-request-id` checked, and its
 * body's `detail` (the document's ApiError; "" for a 304, which has no body). */
async function refused(call: () => Promise<unknown>, status: number): Promise<[string, Response]> {
  try {
    await call();
  } catch (err) {
    if (!(err instanceof ResponseError)) throw err;
    const response = err.response;
    check(response.status === status, `status ${response.status}, expected ${status}`);
    header(response, "x-request-id");
    if (status === 304) return ["", response];
    const detail = ApiErrorFromJSON(await response.json()).detail;
    check(detail.length > 0, `${status} without a detail`);
    return [detail, response];
  }
  throw new Failed(`no error, expected ${status}`);
}

/** Each method is one flow; they run in order, the later ones on the task `create` made. */
class Flows {
  readonly title = `generator flow ${crypto.randomUUID()}`;
  private made: Task | undefined;
  private etag = "";
  private staleEtag = "";

  constructor(private readonly tasks: TasksApi, private readonly operational: OperationalApi) {}

  private get task(): Task {
    if (this.made === undefined) throw new Failed("no task: create failed");
    return this.made;
  }

  async create(): Promise<void> {
    const response = await this.tasks.createTaskRaw({ newTask: { title: this.title } });
    const task = await response.value();
    check(response.raw.status === 201, `status ${response.raw.status}`);
    check(task.title === this.title && task.status === Status.Pending, `stored as ${JSON.stringify(task)}`);
    check(header(response.raw, "location") === `/tasks/${task.id}`, "location is not /tasks/{id}");
    this.etag = header(response.raw, "etag");
    this.made = task;
  }

  async list(): Promise<void> {
    const ids = (await this.tasks.listTasks({ status: Status.Pending, limit: 1000 })).map((t) => t.id);
    check(ids.includes(this.task.id), `task ${this.task.id} not listed`);
    check(ids.every((id, i) => i === 0 || (ids[i - 1] ?? 0) < id), "not in id order");
  }

  async get(): Promise<void> {
    const response = await this.tasks.getTaskRaw({ id: this.task.id });
    check(same(await response.value(), this.task), "differs from what create answered");
    check(header(response.raw, "etag") === this.etag, "etag differs from create's");
  }

  async notModified(): Promise<void> {
    const [, response] = await refused(() => this.tasks.getTask({ id: this.task.id, ifNoneMatch: this.etag }), 304);
    check(header(response, "etag") === this.etag, "304 without the current etag");
  }

  async patch(): Promise<void> {
    const response = await this.tasks.updateTaskRaw({
      id: this.task.id, taskPatch: { status: Status.Completed }, ifMatch: this.etag,
    });
    const task = await response.value();
    check(task.status === Status.Completed && task.title === this.title, `patched to ${JSON.stringify(task)}`);
    [this.staleEtag, this.etag] = [this.etag, header(response.raw, "etag")];
    check(this.etag !== this.staleEtag, "etag did not change");
    this.made = task;
  }

  async preconditionFailed(): Promise<void> {
    const stale = { id: this.task.id, taskPatch: { title: "lost update" }, ifMatch: this.staleEtag };
    await refused(() => this.tasks.updateTask(stale), 412);
    check(same(await this.tasks.getTask({ id: this.task.id }), this.task), "a failed precondition changed the task");
  }

  async invalid(): Promise<void> {
    const [blank] = await refused(() => this.tasks.createTask({ newTask: { title: " " } }), 422);
    check(blank.startsWith("title"), `422 detail ${blank} does not name title`);
    const [limit] = await refused(() => this.tasks.listTasks({ limit: 0 }), 422);
    check(limit.startsWith("limit"), `422 detail ${limit} does not name limit`);
  }

  async badRequest(): Promise<void> {
    const seventeen = Array.from({ length: 17 }, (_, n) => `"${n.toString(16)}"`).join(", ");
    const [detail] = await refused(() => this.tasks.getTask({ id: this.task.id, ifNoneMatch: seventeen }), 400);
    check(detail.toLowerCase().startsWith("if-none-match"), `400 detail ${detail} does not name the header`);
  }

  async headTooLarge(): Promise<void> {
    await refused(() => this.tasks.listTasks({ xConsistencyToken: "t".repeat(17 * 1024) }), 431);
  }

  async notFound(): Promise<void> {
    const [detail] = await refused(() => this.tasks.getTask({ id: NO_SUCH_TASK }), 404);
    check(detail === "Task not found", `404 detail ${detail}`);
  }

  async keyedReplay(): Promise<void> {
    const key = crypto.randomUUID();
    const newTask = { title: `${this.title} (keyed)`, status: Status.InProgress };
    const made = await this.tasks.createTask({ newTask, idempotencyKey: key });
    const again = await this.tasks.createTaskRaw({ newTask, idempotencyKey: key });
    check(same(await again.value(), made), "the replay differs from the first answer");
    check(header(again.raw, "idempotent-replayed") === "true", "replay not marked idempotent-replayed");
    const [detail] = await refused(() => this.tasks.createTask({ newTask: { title: "other" }, idempotencyKey: key }), 422);
    check(detail.startsWith("idempotency-key"), `422 detail ${detail} does not name the key`);
  }

  async delete(): Promise<void> {
    const response = await this.tasks.deleteTaskRaw({ id: this.task.id, ifMatch: this.etag });
    check(response.raw.status === 204, `status ${response.raw.status}`);
    await refused(() => this.tasks.getTask({ id: this.task.id }), 404);
  }

  async operationalRoutes(): Promise<void> {
    const alive = await this.operational.health();
    check(alive.status === "healthy" && alive.service === "task-api", `health ${JSON.stringify(alive)}`);
    check((await this.operational.ready()).status === "ready", "not ready");
    check((await this.operational.metrics()).includes("task_api_http_requests_total"), "metrics without requests");
    const document = await this.operational.openapi();
    check(document.openapi.startsWith("3.1.") && "/tasks" in document.paths, "not this API's document");
  }
}

async function main(): Promise<number> {
  const base = process.argv[2];
  if (process.argv.length !== 3 || base === undefined) {
    console.error("usage: generator_flows.js BASE_URL");
    return 2;
  }
  const configuration = new Configuration({ basePath: base });
  const flows = new Flows(new TasksApi(configuration), new OperationalApi(configuration));
  const names = ["create", "list", "get", "notModified", "patch", "preconditionFailed", "invalid",
    "badRequest", "headTooLarge", "notFound", "keyedReplay", "delete", "operationalRoutes"] as const;
  return run("openapi-generator typescript-fetch", flows, names);
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => { console.error(err); process.exitCode = 1; });

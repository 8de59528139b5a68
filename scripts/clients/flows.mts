// The API's flows through openapi-fetch, typed only by what openapi-typescript generated from
// /openapi.json: no hand-written type of the API, so whatever the document gets wrong shows up
// here as a TypeScript developer would meet it (tsc --strict first). Run by `make test-clients`
// against a live server:
//
//     node target/clients/typescript/out/flows.mjs URL
//
// One line per flow, then `N passed, N failed`; exit code 1 when a flow failed.

import createClient from "openapi-fetch";
import { Failed, check, header, run } from "./flowrun.cjs";
import type { components, paths } from "../../target/clients/typescript/schema.js";

type Task = components["schemas"]["Task"];

const NO_SUCH_TASK = Number.MAX_SAFE_INTEGER; // this run never gets that far

/** The answer's status, checked, and the `x-request-id` every answer carries. */
function answered(response: Response, status: number): void {
  check(response.status === status, `status ${response.status}, expected ${status}`);
  check(Boolean(response.headers.get("x-request-id")), "no x-request-id");
}

function same(a: Task, b: Task): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Each method is one flow; they run in order, the later ones on the task `create` made. */
class Flows {
  readonly title = `client flow ${crypto.randomUUID()}`;
  private made: Task | undefined;
  private etag = "";
  private staleEtag = "";

  constructor(private readonly client: ReturnType<typeof createClient<paths>>) {}

  private get task(): Task {
    if (this.made === undefined) throw new Failed("no task: create failed");
    return this.made;
  }

  async create(): Promise<void> {
    const { data, response } = await this.client.POST("/tasks", {
      body: { title: this.title, description: "made by scripts/clients/flows.mts" },
    });
    answered(response, 201);
    check(data !== undefined, "201 without a task");
    check(data.title === this.title && data.status === "pending", `stored as ${JSON.stringify(data)}`);
    check(data.updated_at === data.created_at, "updated_at differs from created_at");
    check(header(response, "location") === `/tasks/${data.id}`, "location is not /tasks/{id}");
    check(response.headers.get("idempotent-replayed") === null, "a first create marked replayed");
    this.etag = header(response, "etag");
    this.made = data;
  }

  async list(): Promise<void> {
    const { data, response } = await this.client.GET("/tasks", {
      params: { query: { status: "pending", limit: 1000 } },
    });
    answered(response, 200);
    check(data !== undefined, "200 without a list");
    const ids = data.map((task) => task.id);
    check(ids.includes(this.task.id), `task ${this.task.id} not listed`);
    check(ids.every((id, i) => i === 0 || (ids[i - 1] ?? id) < id), "not in id order");
    check(data.every((task) => task.status === "pending"), "status filter not applied");
  }

  async get(): Promise<void> {
    const { data, response } = await this.client.GET("/tasks/{id}", {
      params: { path: { id: this.task.id } },
    });
    answered(response, 200);
    check(data !== undefined && same(data, this.task), "differs from what create answered");
    check(header(response, "etag") === this.etag, "etag differs from create's");
  }

  async notModified(): Promise<void> {
    const { data, response } = await this.client.GET("/tasks/{id}", {
      params: { path: { id: this.task.id }, header: { "If-None-Match": this.etag } },
    });
    check(response.status === 304, `status ${response.status}, expected 304`);
    check(data === undefined, "a 304 with a body");
    check(header(response, "etag") === this.etag, "304 without the current etag");
  }

  async patch(): Promise<void> {
    const { data, response } = await this.client.PATCH("/tasks/{id}", {
      params: { path: { id: this.task.id }, header: { "If-Match": this.etag } },
      body: { status: "completed" },
    });
    answered(response, 200);
    check(data !== undefined, "200 without a task");
    check(data.status === "completed" && data.title === this.title, `patched to ${JSON.stringify(data)}`);
    check(data.updated_at > data.created_at, "updated_at did not move");
    [this.staleEtag, this.etag] = [this.etag, header(response, "etag")];
    check(this.etag !== this.staleEtag, "etag did not change");
    this.made = data;
  }

  async preconditionFailed(): Promise<void> {
    const { error, response } = await this.client.PATCH("/tasks/{id}", {
      params: { path: { id: this.task.id }, header: { "If-Match": this.staleEtag } },
      body: { title: "lost update" },
    });
    answered(response, 412);
    check(error !== undefined && error.detail.length > 0, "412 without a detail");
    const after = await this.client.GET("/tasks/{id}", { params: { path: { id: this.task.id } } });
    check(after.data !== undefined && same(after.data, this.task), "a failed precondition changed the task");
  }

  async invalid(): Promise<void> {
    const created = await this.client.POST("/tasks", { body: { title: " " } });
    answered(created.response, 422);
    check(created.error?.detail.startsWith("title") === true, `422 detail does not name title`);
    const listed = await this.client.GET("/tasks", { params: { query: { limit: 0 } } });
    answered(listed.response, 422);
    check(listed.error?.detail.startsWith("limit") === true, `422 detail does not name limit`);
  }

  async badRequest(): Promise<void> {
    const seventeen = Array.from({ length: 17 }, (_, n) => `"${n.toString(16)}"`).join(", "); // at most 16
    const { error, response } = await this.client.GET("/tasks/{id}", {
      params: { path: { id: this.task.id }, header: { "If-None-Match": seventeen } },
    });
    answered(response, 400);
    check(error?.detail.toLowerCase().startsWith("if-none-match") === true, "400 detail does not name the header");
  }

  async headTooLarge(): Promise<void> {
    const token = "t".repeat(17 * 1024); // the head's limit is 16 KiB
    const { error, response } = await this.client.GET("/tasks", {
      params: { header: { "x-consistency-token": token } },
    });
    answered(response, 431);
    check(error !== undefined && error.detail.length > 0, "431 without a detail");
  }

  async notFound(): Promise<void> {
    const { error, response } = await this.client.GET("/tasks/{id}", {
      params: { path: { id: NO_SUCH_TASK } },
    });
    answered(response, 404);
    check(error?.detail === "Task not found", "404 detail");
  }

  async keyedReplay(): Promise<void> {
    const key = crypto.randomUUID();
    const body = { title: `${this.title} (keyed)`, status: "in_progress" } as const;
    const params = { header: { "Idempotency-Key": key } };
    const first = await this.client.POST("/tasks", { body, params });
    answered(first.response, 201);
    check(first.data !== undefined, "201 without a task");
    const again = await this.client.POST("/tasks", { body, params });
    answered(again.response, 201);
    check(again.data !== undefined && same(again.data, first.data), "the replay differs from the first answer");
    check(header(again.response, "idempotent-replayed") === "true", "replay not marked idempotent-replayed");
    const reused = await this.client.POST("/tasks", { body: { title: "other" }, params });
    answered(reused.response, 422);
    check(reused.error?.detail.startsWith("idempotency-key") === true, "422 detail does not name the key");
  }

  async delete(): Promise<void> {
    const { response } = await this.client.DELETE("/tasks/{id}", {
      params: { path: { id: this.task.id }, header: { "If-Match": this.etag } },
    });
    answered(response, 204);
    const gone = await this.client.GET("/tasks/{id}", { params: { path: { id: this.task.id } } });
    answered(gone.response, 404);
    check(gone.error?.detail === "Task not found", "deleted task still there");
  }

  async operational(): Promise<void> {
    const alive = await this.client.GET("/health");
    answered(alive.response, 200);
    check(alive.data?.status === "healthy" && alive.data.service === "task-api", "health");
    const ready = await this.client.GET("/ready");
    answered(ready.response, 200);
    check(ready.data?.status === "ready", "ready");
    // openapi-fetch parses JSON unless told: /metrics is text.
    const metrics = await this.client.GET("/metrics", { parseAs: "text" });
    answered(metrics.response, 200);
    check(metrics.data?.includes("task_api_http_requests_total") === true, "metrics without requests_total");
    const document = await this.client.GET("/openapi.json");
    answered(document.response, 200);
    check(document.data !== undefined, "no document");
    check(document.data.openapi.startsWith("3.1.") && "/tasks" in document.data.paths, "not this API's document");
  }
}

async function main(): Promise<number> {
  const baseUrl = process.argv[2];
  if (baseUrl === undefined || process.argv.length !== 3) {
    console.error("usage: flows.mjs BASE_URL");
    return 2;
  }
  const flows = new Flows(createClient<paths>({ baseUrl }));
  const names = [
    "create", "list", "get", "notModified", "patch", "preconditionFailed", "invalid",
    "badRequest", "headTooLarge", "notFound", "keyedReplay", "delete", "operational",
  ] as const;
  return run("typescript", flows, names);
}

process.exitCode = await main();

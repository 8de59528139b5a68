// What flows.mts and generator_flows.ts share: a flow's failure, reading a header, and running
// the flows in order, one line each, then `LABEL: N passed, N failed`. CommonJS, so that the
// ES module and the CommonJS program can both import it.

export class Failed extends Error {
  override name = "Failed";
}

export function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Failed(what);
}

export function header(response: Response, name: string): string {
  const value = response.headers.get(name);
  if (value === null) throw new Failed(`no ${name} header`);
  return value;
}

/** Runs `flows[name]()` for each name in order; the exit code, 1 when a flow failed. */
export async function run<N extends string>(
  label: string, flows: Record<N, () => Promise<void>>, names: readonly N[],
): Promise<number> {
  let passed = 0;
  let failed = 0;
  for (const name of names) {
    try {
      await flows[name]();
      passed += 1;
      console.log(`ok    ${label} ${name}`);
    } catch (err) {
      failed += 1;
      const why = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      console.log(`FAIL  ${label} ${name}: ${why}`);
    }
  }
  console.log(`${label}: ${passed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}

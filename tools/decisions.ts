// `traffic-guard decisions`: the operator's view of the bans shared through etcd (docs/decisions.md): list them,
// add a manual ban, lift one or many, and watch them come and go. Records are read and written with the shared
// record module (tools/lib/decision-record.ts) through etcd's JSON gateway (tools/lib/etcd.ts).
//
// Every input is checked before the first call to etcd, so bad input writes nothing; an unreachable etcd or
// refused credentials fail on the first call, before any write.
import { Option, type Command } from "commander";
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { type CommandContext } from "./lib/command.ts";
import {
  bansPrefix, DEFAULT_PREFIX, decisionKey, encodeRecord, formatLeft, MAX_BAN_MS, MAX_REASON, MIN_LEASE_SECONDS, normaliseClient,
  parseDuration, parseRecord, prefixProblem, type Decision,
} from "./lib/decision-record.ts";
import { EtcdClient, EtcdError, GRPC, type KeyValue } from "./lib/etcd.ts";
import { describeError, UserError } from "./lib/errors.ts";

/** Options every `decisions` subcommand takes: where etcd is and how to authenticate. */
interface StoreOptions {
  etcd?: string;
  prefix: string;
  user?: string;
  cacert?: string;
  cert?: string;
  key?: string;
  timeout: string;
}

/** Environment variable holding the password of --user (never on the command line, where `ps` shows it). */
export const PASSWORD_ENV = "TRAFFIC_GUARD_ETCD_PASSWORD";
/** Environment variable giving --etcd when the option is absent. */
export const ENDPOINT_ENV = "TRAFFIC_GUARD_ETCD_ENDPOINT";

function addStoreOptions(cmd: Command): Command {
  return cmd
    .option("--etcd <url>", `etcd client URL, e.g. http://127.0.0.1:2379 or https://etcd.example:2379 (default: $${ENDPOINT_ENV})`)
    .option("--prefix <prefix>", "the key space, as in the filter's decisions.prefix", DEFAULT_PREFIX)
    .option("--user <name>", `etcd user (auth enabled); the password comes from $${PASSWORD_ENV}`)
    .option("--cacert <file>", "PEM CA bundle that signed etcd's server certificate (https)")
    .option("--cert <file>", "PEM client certificate, when etcd asks for one (https)")
    .option("--key <file>", "PEM key of --cert")
    .option("--timeout <duration>", "timeout of one call to etcd", "5s");
}

async function readPem(path: string | undefined, what: string): Promise<Buffer | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path);
  } catch (err) {
    throw new UserError(`cannot read ${what} ${path}: ${describeError(err)}`);
  }
}

// Checks the store options and builds the client; no call is made yet.
async function openStore(opts: StoreOptions, env: NodeJS.ProcessEnv): Promise<{ etcd: EtcdClient; prefix: string }> {
  const endpoint = opts.etcd ?? env[ENDPOINT_ENV];
  if (!endpoint) throw new UserError(`no etcd given: pass --etcd <url> or set ${ENDPOINT_ENV}`);
  const problem = prefixProblem(opts.prefix);
  if (problem) throw new UserError(`--${problem}`);
  const timeoutMs = parseDuration(opts.timeout);
  if (timeoutMs === undefined || timeoutMs < 10 || timeoutMs > 600_000) throw new UserError(`--timeout "${opts.timeout}" is not a duration from 10ms to 10m, like "5s"`);
  const password = env[PASSWORD_ENV];
  if (opts.user !== undefined && password === undefined) throw new UserError(`--user ${opts.user} needs the password in $${PASSWORD_ENV}`);
  if ((opts.cert === undefined) !== (opts.key === undefined)) throw new UserError("--cert and --key go together");
  const ca = await readPem(opts.cacert, "--cacert");
  const cert = await readPem(opts.cert, "--cert");
  const key = await readPem(opts.key, "--key");
  if ((ca || cert) && !endpoint.startsWith("https://")) throw new UserError(`--cacert/--cert need an https:// --etcd, got ${endpoint}`);
  try {
    const etcd = new EtcdClient({ endpoint, username: opts.user, password: opts.user === undefined ? undefined : password, ca, cert, key, timeoutMs });
    return { etcd, prefix: opts.prefix };
  } catch (err) {
    throw new UserError(`--etcd: ${describeError(err)}`);
  }
}

// Turns a failed etcd call into one clear line.
function storeError(err: unknown, etcd: EtcdClient, user: string | undefined): never {
  if (err instanceof EtcdError) {
    if (err.code === GRPC.INVALID_ARGUMENT && /authentication failed|invalid user|password/i.test(err.message)) {
      throw new UserError(`etcd at ${etcd.endpoint} refused the credentials of user "${user}": ${err.message}`);
    }
    if (err.code === GRPC.UNAUTHENTICATED || /user name is empty|token/i.test(err.message)) {
      throw new UserError(`etcd at ${etcd.endpoint} needs authentication: pass --user and set $${PASSWORD_ENV} (${err.message})`);
    }
    if (err.code === GRPC.PERMISSION_DENIED) throw new UserError(`etcd at ${etcd.endpoint} denied the operation to user "${user}": ${err.message}`);
    throw new UserError(err.message);
  }
  if (err instanceof UserError) throw err;
  throw new UserError(`etcd at ${etcd.endpoint}: ${describeError(err)}`);
}

/** A record read from the store: a decision, or a key whose record the filter would skip. */
type Listed = { decision: Decision; modRevision: string } | { client: string; problem: string };

function readKv(kv: KeyValue, prefix: string): Listed {
  const client = kv.key.slice(bansPrefix(prefix).length);
  const n = normaliseClient(client);
  if ("problem" in n) return { client, problem: "the key names no address, network or SPIFFE ID" };
  if (n.client !== client) return { client, problem: `the key is not in the filter's form (${n.client})` };
  const r = parseRecord(kv.value);
  if ("problem" in r) return { client, problem: r.problem };
  return { decision: { client, ...r.record }, modRevision: kv.modRevision };
}

async function listAll(etcd: EtcdClient, prefix: string): Promise<Listed[]> {
  return (await etcd.listPrefix(bansPrefix(prefix))).map((kv) => readKv(kv, prefix));
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join("  ").trimEnd() + "\n").join("");
}

function line(d: Decision, now: number): string {
  return `${d.client} reason=${d.reason || "-"} origin=${d.origin || "-"} left=${formatLeft(d.until - now)} strike=${d.strike}`;
}

/** Adds `traffic-guard decisions` (list, add, delete, watch) to the program. */
export function registerDecisions(program: Command, { io }: CommandContext): Command {
  const decisions = program
    .command("decisions")
    .description("list, add, delete and watch the bans shared through etcd (the filter's `decisions` block)")
    .addHelpText("after", `\nThe password of --user is read from $${PASSWORD_ENV}. Bad input, an unreachable etcd or refused credentials exit 1 and write nothing.`);

  addStoreOptions(decisions.command("list").description("print the active decisions: client, reason, origin, time left, strike"))
    .option("--json", "print a JSON array instead of a table (malformed records included, with their problem)")
    .action(async (opts: StoreOptions & { json?: boolean }) => {
      const { etcd, prefix } = await openStore(opts, io.env);
      let listed: Listed[];
      try {
        listed = await listAll(etcd, prefix);
      } catch (err) {
        storeError(err, etcd, opts.user);
      }
      const now = Date.now();
      const live = listed.filter((l) => !("decision" in l) || l.decision.until > now);
      if (opts.json) {
        io.stdout(JSON.stringify(live.map((l) => ("decision" in l ? { ...l.decision, leftMs: l.decision.until - now } : l)), null, 2) + "\n");
        return;
      }
      if (live.length === 0) {
        io.stdout(`no active decisions under ${bansPrefix(prefix)}\n`);
        return;
      }
      const rows = [["CLIENT", "REASON", "ORIGIN", "LEFT", "STRIKE"]];
      for (const l of live) {
        if ("decision" in l) rows.push([l.decision.client, l.decision.reason || "-", l.decision.origin || "-", formatLeft(l.decision.until - now), String(l.decision.strike)]);
        else rows.push([l.client, `(malformed: ${l.problem})`, "-", "-", "-"]);
      }
      io.stdout(table(rows));
    });

  addStoreOptions(decisions.command("add").description("ban a client on every proxy that syncs this prefix (a manual ban)"))
    .argument("<client>", "an IPv4/IPv6 address, a network like 203.0.113.0/24 or 2001:db8:1:2::/64, or a SPIFFE ID")
    .requiredOption("--for <duration>", `how long, like "1h" or "30m" (at most ${MAX_BAN_MS / 86_400_000}d, the filter's longest duration)`)
    .option("--reason <text>", "why (shown by list and in the filter's warn line)", "manual")
    .option("--origin <name>", "who bans, recorded in the record (default: operator:<your user name>)")
    .action(async (client: string, opts: StoreOptions & { for: string; reason: string; origin?: string }) => {
      const n = normaliseClient(client);
      if ("problem" in n) throw new UserError(n.problem);
      const ms = parseDuration(opts.for);
      if (ms === undefined || ms === 0) throw new UserError(`--for "${opts.for}" is not a duration like "90s", "10m", "1h30m" or "1d"`);
      if (ms > MAX_BAN_MS) throw new UserError(`--for ${opts.for} is longer than the filter's maximum ban duration (${MAX_BAN_MS / 86_400_000}d)`);
      if (ms < MIN_LEASE_SECONDS * 1000) throw new UserError(`--for ${opts.for} is shorter than ${MIN_LEASE_SECONDS}s, the shortest lease etcd grants`);
      if (opts.reason.length === 0 || opts.reason.length > MAX_REASON || /[\x00-\x1f\x7f]/.test(opts.reason)) {
        throw new UserError(`--reason must be 1 to ${MAX_REASON} characters without control characters`);
      }
      let origin = opts.origin;
      if (origin === undefined) {
        let name = "unknown";
        try {
          name = userInfo().username;
        } catch {
          // no user name (a container without /etc/passwd entry): keep "unknown"
        }
        origin = `operator:${name}`;
      }
      if (origin.length === 0 || origin.length > 512 || /[\x00-\x1f\x7f]/.test(origin)) throw new UserError("--origin must be 1 to 512 characters without control characters");
      const { etcd, prefix } = await openStore(opts, io.env);
      const now = Date.now();
      const record = { until: now + ms, reason: opts.reason, strike: 0, origin, created: now };
      try {
        // The lease ends with the ban, so etcd deletes the record then and every proxy lifts it.
        const lease = await etcd.grant(Math.max(MIN_LEASE_SECONDS, Math.ceil(ms / 1000)));
        await etcd.put({ key: decisionKey(prefix, n.client), value: encodeRecord(record), lease: lease.id });
      } catch (err) {
        storeError(err, etcd, opts.user);
      }
      io.stdout(`banned ${n.client} for ${formatLeft(ms)} (until ${new Date(record.until).toISOString()}, reason ${opts.reason}) under ${bansPrefix(prefix)}\n`);
    });

  addStoreOptions(decisions.command("delete").description("lift a ban on every proxy (delete its decision), or many with --all"))
    .argument("[client]", "the client whose decision to delete, as `list` prints it (an address is normalised)")
    .option("--all", "delete every decision under the prefix (with --reason: only those of that rule)")
    .option("--reason <rule>", "with --all, only decisions with this reason (a rule name, or manual)")
    .action(async (client: string | undefined, opts: StoreOptions & { all?: boolean; reason?: string }) => {
      if (opts.all && client !== undefined) throw new UserError("give either a client or --all, not both");
      if (!opts.all && client === undefined) throw new UserError("give the client to unban, or --all [--reason <rule>]");
      if (opts.reason !== undefined && !opts.all) throw new UserError("--reason selects decisions for --all; to delete one client, name it alone");
      let key: string | undefined;
      let normal = "";
      if (client !== undefined) {
        // A key that is not a valid client (a malformed record) can be deleted by its exact name too.
        const n = normaliseClient(client);
        normal = "problem" in n ? client : n.client;
        if ("problem" in n && !/^[\x21-\x7e]{1,2048}$/.test(client)) throw new UserError(n.problem);
      }
      const { etcd, prefix } = await openStore(opts, io.env);
      key = client !== undefined ? decisionKey(prefix, normal) : undefined;
      let deleted = 0;
      try {
        if (key !== undefined) {
          deleted = await etcd.delete(key);
          if (deleted === 0) throw new UserError(`no decision for ${normal} under ${bansPrefix(prefix)} (see \`traffic-guard decisions list\`)`);
          io.stdout(`deleted the decision for ${normal}\n`);
          return;
        }
        const listed = await listAll(etcd, prefix);
        const chosen = listed.filter((l) => opts.reason === undefined || ("decision" in l && l.decision.reason === opts.reason));
        // Deleted in transactions of at most 100 operations (etcd's default --max-txn-ops is 128).
        for (let i = 0; i < chosen.length; i += 100) {
          const keys = chosen.slice(i, i + 100).map((l) => decisionKey(prefix, "decision" in l ? l.decision.client : l.client));
          await etcd.txn({ deletes: keys });
          deleted += keys.length;
        }
      } catch (err) {
        storeError(err, etcd, opts.user);
      }
      io.stdout(`deleted ${deleted} decision${deleted === 1 ? "" : "s"}${opts.reason !== undefined ? ` with reason ${opts.reason}` : ""} under ${bansPrefix(prefix)}\n`);
    });

  addStoreOptions(decisions.command("watch").description("print a line whenever a decision appears (+), changes (~) or disappears (-), until interrupted"))
    .addOption(new Option("--no-initial", "do not print the decisions active when the watch starts"))
    .action(async (opts: StoreOptions & { initial: boolean }) => {
      const { etcd, prefix } = await openStore(opts, io.env);
      const stamp = () => new Date().toISOString();
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      try {
        const first = await etcd.rangePrefix({ key: bansPrefix(prefix), limit: 1, countOnly: true });
        if (opts.initial) {
          const now = Date.now();
          for (const l of await listAll(etcd, prefix)) {
            if ("decision" in l) {
              if (l.decision.until > now) io.stdout(`${stamp()} = ${line(l.decision, now)}\n`);
            } else io.stdout(`${stamp()} ! ${l.client} malformed: ${l.problem}\n`);
          }
        }
        io.stdout(`${stamp()} watching ${bansPrefix(prefix)} at ${etcd.endpoint} from revision ${Number(first.revision) + 1}\n`);
        const seen = new Set<string>();
        await etcd.watchPrefix(bansPrefix(prefix), (e) => {
          const client = e.kv.key.slice(bansPrefix(prefix).length);
          if (e.type === "DELETE") {
            seen.delete(client);
            io.stdout(`${stamp()} - ${client}\n`);
            return;
          }
          const l = readKv(e.kv, prefix);
          const mark = e.kv.version === "1" && !seen.has(client) ? "+" : "~";
          seen.add(client);
          io.stdout("decision" in l ? `${stamp()} ${mark} ${line(l.decision, Date.now())}\n` : `${stamp()} ! ${l.client} malformed: ${l.problem}\n`);
        }, controller.signal, String(Number(first.revision) + 1));
      } catch (err) {
        storeError(err, etcd, opts.user);
      } finally {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
      }
    });

  return decisions;
}

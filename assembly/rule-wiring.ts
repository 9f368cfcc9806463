// The custom rules' side of the entry module: configure-time set-up, the release of held requests on the
// root context's tick, and what a ban line says about a custom rule. Kept here so index.ts only wires.

import { log, LogLevelValues } from "@solo-io/proxy-runtime/assembly";
import { continue_request, proxy_set_effective_context } from "@solo-io/proxy-runtime/assembly/runtime";
import * as imports from "@solo-io/proxy-runtime/assembly/imports";
import { Config, Rule } from "./config";
import { Table } from "./table";
import * as custom from "./custom-rules";
import * as delay from "./delay";
import * as m from "./metrics";

/** Configure-time set-up of the custom rules: publish the record layout, define the per-rule counters. */
export function customConfigured(cfg: Config, table: Table, metrics: m.RuleMetrics): void {
  custom.setBits(0);
  let rules = cfg.custom.rules;
  if (rules.length == 0) return;
  table.layout.publish();
  let names: string[] = [];
  let delays: bool[] = [];
  for (let i = 0; i < rules.length; i++) {
    names.push(rules[i].name);
    delays.push(rules[i].delayMaxMs > 0);
  }
  if (!metrics.define(names, delays)) log(LogLevelValues.error, "traffic-guard: the host refused to define some per-rule metrics");
}

/**
 * Continues every held request due at `now` (earliest first) and counts it with its hold time; once
 * nothing is held, the tick goes back to `idleTickMs`. Each release makes the stream the effective
 * context, then continues its request.
 */
export function releaseDue(metrics: m.RuleMetrics, now: u64, idleTickMs: u32): void {
  while (delay.popDue(now)) {
    if (proxy_set_effective_context(delay.poppedId) == 0) continue_request(); // 0: WasmResult Ok
    let rule = delay.poppedRule;
    if (rule >= 0) {
      metrics.add(rule, m.RULE_DELAYED, 1);
      metrics.add(rule, m.RULE_DELAYED_MS, now - delay.poppedSince);
    }
  }
  if (delay.held == 0) {
    imports.proxy_set_tick_period_milliseconds(idleTickMs);
    delay.slowed();
  }
}

/** The limit a ban line of custom rule i shows: its `then` limit when that started the ban. */
export function banLineLimit(cfg: Config, i: i32): Rule {
  let rule = cfg.custom.rules[i];
  let then = rule.then;
  return custom.banByThen && then !== null ? then : rule.limit;
}

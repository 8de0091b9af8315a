// The benchmark's mixed traffic: POST /v1/decisions, and for about 20% of decisions a
// POST /v1/feedback on one shown action (items prepared by load_tests/traffic.py).
// Items are walked in order, so every target gets the same sequence.
// Environment: BASE_URL, ITEMS (JSON file), MODE (rate|max), RATE, DURATION, VUS,
// MAX_VUS, TIMEOUT, OUT (summary JSON path).
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { SharedArray } from 'k6/data';

const items = new SharedArray('items', () => JSON.parse(open(__ENV.ITEMS)));
const mode = __ENV.MODE || 'rate';
const scenario = mode === 'rate'
  ? {
      executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
      duration: __ENV.DURATION, preAllocatedVUs: Number(__ENV.VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 500), gracefulStop: '3s',
    }
  : { executor: 'constant-vus', vus: Number(__ENV.VUS || 16), duration: __ENV.DURATION,
      gracefulStop: '3s' };

// Thresholds that always pass: they make k6 report the per-kind sub-metrics.
const always = {};
for (const kind of ['decision', 'feedback']) {
  always[`http_req_duration{kind:${kind}}`] = ['max>=0'];
  always[`http_req_failed{kind:${kind}}`] = ['rate>=0'];
  always[`http_reqs{kind:${kind}}`] = ['count>=0'];
  always[`checks{kind:${kind}}`] = ['rate>=0'];
}

export const options = {
  scenarios: { traffic: scenario },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  discardResponseBodies: true,
  thresholds: always,
};

const timeout = __ENV.TIMEOUT || '5s';
const headers = { 'Content-Type': 'application/json' };

export default function () {
  const item = items[exec.scenario.iterationInTest % items.length];
  const fb = item.fb;
  const res = http.post(`${__ENV.BASE_URL}/v1/decisions`, item.body, {
    headers, timeout, tags: { kind: 'decision', channel: item.channel },
    responseType: fb ? 'text' : 'none',
  });
  const ok = check(res, { 'decision 200': (r) => r.status === 200 }, { kind: 'decision' });
  if (!fb || !ok) return;
  const decision = res.json();
  const shown = decision.actions || [];
  const fed = check(decision, { 'decision has an id': (d) => typeof d.decision_id === 'string' },
                    { kind: 'decision' });
  // An empty list is a valid answer (the contact policy dropped every offer the customer
  // dismissed); there is just nothing to give feedback on.
  if (!fed || shown.length === 0) return;
  const event = {
    decision_id: decision.decision_id,
    action_id: shown[Math.min(fb.rank, shown.length - 1)].action_id,
    outcome: fb.outcome,
  };
  if (fb.value !== null) event.value = fb.value;
  const r2 = http.post(`${__ENV.BASE_URL}/v1/feedback`, JSON.stringify(event), {
    headers, timeout, tags: { kind: 'feedback', channel: item.channel },
  });
  check(r2, { 'feedback 202': (r) => r.status === 202 }, { kind: 'feedback' });
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data) };
}

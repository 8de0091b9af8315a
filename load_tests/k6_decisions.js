// Fixed-arrival-rate (or closed-loop) load of POST /v1/decisions for nextbest's bench.
// Parameters come from the environment: BASE_URL, BODIES (JSON file), MODE (rate|max),
// RATE, DURATION, VUS, OUT (summary JSON path).
import http from 'k6/http';
import { check } from 'k6';
import { SharedArray } from 'k6/data';

const bodies = new SharedArray('bodies', () => JSON.parse(open(__ENV.BODIES)));
const mode = __ENV.MODE || 'rate';
const scenario = mode === 'rate'
  ? {
      executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
      duration: __ENV.DURATION, preAllocatedVUs: Number(__ENV.VUS || 50), maxVUs: 400,
    }
  : { executor: 'constant-vus', vus: Number(__ENV.VUS || 16), duration: __ENV.DURATION };

export const options = {
  scenarios: { decisions: scenario },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  discardResponseBodies: true,
};

const params = { headers: { 'Content-Type': 'application/json' }, timeout: '5s' };

export default function () {
  const body = bodies[Math.floor(Math.random() * bodies.length)];
  const res = http.post(`${__ENV.BASE_URL}/v1/decisions`, body, params);
  check(res, { 'status 200': (r) => r.status === 200 });
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data) };
}

/*
 * openloop: the benchmark's mixed traffic at a fixed arrival rate, for tens of microseconds
 * of CPU per request (k6 spends hundreds on this machine, on the cores the server shares).
 *
 *   openloop URL ITEMS RATE SECONDS OUT [CONNS] [MAX_CONNS] [TIMEOUT_S]
 *
 * URL is http://IPv4:PORT (loopback). ITEMS has one item per line, written by
 * load_tests/openloop.py (write_items):  FB \t OUTCOME \t VALUE \t RANK \t BODY
 * with FB 0 or 1 and OUTCOME, VALUE "-" when unused. Request i is due at start + i/RATE
 * and walks the items in order, as k6_decisions.js does. A due request takes an idle
 * keep-alive connection; with none idle it opens one, up to MAX_CONNS; past that it is
 * dropped (k6's dropped_iterations). Latency is from the due time to the last byte of
 * the answer, so a late send counts against the server's figure, never for it. A
 * decision with FB 1 that answers 200 with actions is followed on the same connection by
 * one POST /v1/feedback on the action at RANK (or the last shown). Errors: a status of
 * 400 or more, a broken connection, a timeout, an answer still missing 3 s after the last
 * due time. Failed checks: a decision not 200, a feedback not 202, a decision without id.
 * Writes a JSON summary to OUT. With OPENLOOP_TRACE=PATH in the environment, also one line
 * per answer to PATH: seconds from the start to the due (decision) or send (feedback)
 * time, the item's index, decision|feedback, the status and the latency in ms.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define GRACE_S 3.0
#define RBUF 65536

typedef struct {
  char *request; /* the whole HTTP request, headers and body */
  size_t len;
  int fb, rank;
  char outcome[24], value[32];
} item_t;

enum { IDLE, CONNECTING, DECISION, FEEDBACK };

typedef struct conn {
  int fd, state, item;
  double due, sent, deadline;
  char rbuf[RBUF];
  size_t rlen;
  char wbuf[1024];
  const char *out;
  size_t outlen, outoff;
  struct conn *next_idle;
} conn_t;

typedef struct {
  double *v;
  size_t n, cap;
} samples_t;

static struct sockaddr_in addr;
static char host[80];
static item_t *items;
static size_t n_items;
static int ep;
static conn_t **conns;
static int n_conns, max_conns;
static conn_t *idle;
static double timeout_s = 5.0;
static samples_t dec_ms, fb_ms;
static long errors, failed_checks, dropped, fb_sent;
static FILE *trace; /* OPENLOOP_TRACE: one line per answer (seconds since start, item, kind,
                       status, ms) */
static double start;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
  perror(what);
  exit(2);
}

static void push(samples_t *s, double x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 4096;
    s->v = realloc(s->v, s->cap * sizeof(double));
    if (!s->v) die("realloc");
  }
  s->v[s->n++] = x;
}

static void load_items(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  char *line = NULL;
  size_t cap = 0, alloc = 0;
  ssize_t got;
  while ((got = getline(&line, &cap, f)) > 0) {
    if (line[got - 1] == '\n') line[--got] = 0;
    if (got == 0) continue;
    char *fields[5], *p = line;
    for (int k = 0; k < 4; k++) {
      fields[k] = p;
      p = strchr(p, '\t');
      if (!p) { fprintf(stderr, "bad item line %zu\n", n_items + 1); exit(2); }
      *p++ = 0;
    }
    fields[4] = p;
    if (n_items == alloc) {
      alloc = alloc ? 2 * alloc : 1024;
      items = realloc(items, alloc * sizeof(item_t));
      if (!items) die("realloc");
    }
    item_t *it = &items[n_items++];
    it->fb = atoi(fields[0]);
    snprintf(it->outcome, sizeof it->outcome, "%s", fields[1]);
    snprintf(it->value, sizeof it->value, "%s", fields[2]);
    it->rank = atoi(fields[3]);
    size_t blen = strlen(fields[4]);
    it->request = malloc(blen + 256);
    if (!it->request) die("malloc");
    it->len = (size_t)sprintf(it->request,
                              "POST /v1/decisions HTTP/1.1\r\nHost: %s\r\n"
                              "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                              host, blen, fields[4]);
  }
  free(line);
  fclose(f);
  if (n_items == 0) { fprintf(stderr, "no items in %s\n", path); exit(2); }
}

static void close_conn(conn_t *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  for (int i = 0; i < n_conns; i++)
    if (conns[i] == c) { conns[i] = conns[--n_conns]; break; }
  /* drop it from the idle list if it is there */
  for (conn_t **p = &idle; *p; p = &(*p)->next_idle)
    if (*p == c) { *p = c->next_idle; break; }
  free(c);
}

static conn_t *open_conn(void) {
  if (n_conns >= max_conns) return NULL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  conn_t *c = calloc(1, sizeof *c);
  if (!c) die("calloc");
  c->fd = fd;
  c->state = CONNECTING;
  c->item = -1;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    close(fd);
    free(c);
    errors++;
    return NULL;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  conns[n_conns++] = c;
  return c;
}

static void want_write(conn_t *c, int on) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what is pending; 0 when all is out or waiting for EPOLLOUT, -1 on error. */
static int flush_out(conn_t *c) {
  while (c->outoff < c->outlen) {
    ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
    if (w < 0) {
      if (errno == EAGAIN) { want_write(c, 1); return 0; }
      return -1;
    }
    c->outoff += (size_t)w;
  }
  return 0;
}

static void fail(conn_t *c) {
  errors++;
  close_conn(c);
}

/* Send a request of `len` bytes on an idle (or just connected) connection. */
static void start_request(conn_t *c, int state, const char *request, size_t len) {
  c->state = state;
  c->sent = now();
  c->deadline = c->sent + timeout_s;
  c->rlen = 0;
  c->out = request;
  c->outlen = len;
  c->outoff = 0;
  if (flush_out(c) < 0) fail(c);
}

static void send_decision(conn_t *c, int item, double due) {
  c->item = item;
  c->due = due;
  start_request(c, DECISION, items[item].request, items[item].len);
}

static void make_idle(conn_t *c) {
  c->state = IDLE;
  c->item = -1;
  c->next_idle = idle;
  idle = c;
}

/* The string value of "key" at or after p, copied to out; NULL when absent. */
static const char *string_field(const char *p, const char *end, const char *key, char *out,
                                size_t cap, const char **after) {
  size_t klen = strlen(key);
  const char *k = memmem(p, (size_t)(end - p), key, klen);
  if (!k) return NULL;
  const char *q = k + klen;
  while (q < end && (*q == ' ' || *q == ':')) q++;
  if (q >= end || *q != '"') return NULL;
  const char *s = ++q;
  while (q < end && *q != '"') q++;
  if (q >= end || (size_t)(q - s) >= cap) return NULL;
  memcpy(out, s, (size_t)(q - s));
  out[q - s] = 0;
  if (after) *after = q;
  return out;
}

static void send_feedback(conn_t *c, const char *body, size_t blen) {
  const item_t *it = &items[c->item];
  char decision_id[128], action_id[128], chosen[128];
  const char *end = body + blen;
  if (!string_field(body, end, "\"decision_id\"", decision_id, sizeof decision_id, NULL)) {
    failed_checks++;
    make_idle(c);
    return;
  }
  const char *p = memmem(body, blen, "\"actions\"", 9);
  int shown = 0;
  chosen[0] = 0;
  while (p && string_field(p, end, "\"action_id\"", action_id, sizeof action_id, &p)) {
    if (shown <= it->rank) strcpy(chosen, action_id);
    shown++;
  }
  if (shown == 0) { make_idle(c); return; } /* nothing shown: nothing to give feedback on */
  char event[512];
  int elen;
  if (strcmp(it->value, "-") != 0)
    elen = snprintf(event, sizeof event,
                    "{\"decision_id\":\"%s\",\"action_id\":\"%s\",\"outcome\":\"%s\",\"value\":%s}",
                    decision_id, chosen, it->outcome, it->value);
  else
    elen = snprintf(event, sizeof event,
                    "{\"decision_id\":\"%s\",\"action_id\":\"%s\",\"outcome\":\"%s\"}",
                    decision_id, chosen, it->outcome);
  int n = snprintf(c->wbuf, sizeof c->wbuf,
                   "POST /v1/feedback HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n\r\n%s", host, elen, event);
  fb_sent++;
  start_request(c, FEEDBACK, c->wbuf, (size_t)n);
}

/* A complete answer in rbuf: its length, 0 when more is to come, -1 when unparseable. */
static long complete(conn_t *c, int *status, int *closing, const char **body, size_t *blen) {
  char *hend = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!hend) return c->rlen >= RBUF ? -1 : 0;
  if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(c->rbuf + 9);
  long cl = -1;
  *closing = 0;
  for (char *line = memchr(c->rbuf, '\n', (size_t)(hend - c->rbuf)); line && line < hend;
       line = memchr(line + 1, '\n', (size_t)(hend - line))) {
    if (strncasecmp(line + 1, "content-length:", 15) == 0) cl = atol(line + 16);
    else if (strncasecmp(line + 1, "connection: close", 17) == 0) *closing = 1;
  }
  if (cl < 0) return -1; /* the servers under test always send Content-Length */
  size_t total = (size_t)(hend + 4 - c->rbuf) + (size_t)cl;
  if (total > RBUF) return -1;
  if (c->rlen < total) return 0;
  *body = hend + 4;
  *blen = (size_t)cl;
  return (long)total;
}

static void on_readable(conn_t *c, double t) {
  for (;;) {
    ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
    if (r > 0) { c->rlen += (size_t)r; if (c->rlen == RBUF) break; continue; }
    if (r < 0 && errno == EAGAIN) break;
    /* closed by the server, or a read error */
    if (c->state == IDLE) close_conn(c);
    else fail(c);
    return;
  }
  if (c->state != DECISION && c->state != FEEDBACK) return;
  int status = 0, closing = 0;
  const char *body = NULL;
  size_t blen = 0;
  long n = complete(c, &status, &closing, &body, &blen);
  if (n == 0) return;
  if (n < 0) { failed_checks++; fail(c); return; }
  if (status >= 400) errors++;
  if (c->state == DECISION) {
    push(&dec_ms, 1000.0 * (t - c->due));
    if (trace) fprintf(trace, "%.6f\t%d\tdecision\t%d\t%.3f\n", c->due - start, c->item, status,
                       1000.0 * (t - c->due));
    if (status != 200) failed_checks++;
    if (closing) { close_conn(c); return; }
    if (status == 200 && items[c->item].fb) send_feedback(c, body, blen);
    else make_idle(c);
  } else {
    push(&fb_ms, 1000.0 * (t - c->sent));
    if (trace) fprintf(trace, "%.6f\t%d\tfeedback\t%d\t%.3f\n", c->sent - start, c->item,
                       status, 1000.0 * (t - c->sent));
    if (status != 202) failed_checks++;
    if (closing) { close_conn(c); return; }
    make_idle(c);
  }
}

static void on_event(conn_t *c, uint32_t events, double t) {
  if (c->state == CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & (EPOLLERR | EPOLLHUP))) { fail(c); return; }
    if (!(events & EPOLLOUT)) return;
    int item = c->item;
    double due = c->due;
    want_write(c, 0);
    if (item >= 0) send_decision(c, item, due);
    else make_idle(c);
    return;
  }
  if (events & EPOLLOUT) {
    if (flush_out(c) < 0) { fail(c); return; }
    if (c->outoff == c->outlen) want_write(c, 0);
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c, t);
}

static void dispatch(int item, double due) {
  conn_t *c = idle;
  if (c) {
    idle = c->next_idle;
    send_decision(c, item, due);
    return;
  }
  c = open_conn();
  if (!c) { dropped++; return; }
  c->item = item;
  c->due = due;
  c->deadline = due + timeout_s;
}

static void expire(double t) {
  for (int i = n_conns - 1; i >= 0; i--) {
    conn_t *c = conns[i];
    if (c->state != IDLE && t > c->deadline) fail(c);
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double quantile(samples_t *s, double q) {
  if (s->n == 0) return 0.0;
  size_t k = (size_t)ceil(q * (double)s->n);
  return s->v[k ? k - 1 : 0];
}

static void arm(int tfd, double at) {
  struct itimerspec its = {0};
  its.it_value.tv_sec = (time_t)at;
  its.it_value.tv_nsec = (long)((at - (double)(time_t)at) * 1e9);
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
  if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s URL ITEMS RATE SECONDS OUT [CONNS] [MAX_CONNS] [TIMEOUT_S]\n",
            argv[0]);
    return 2;
  }
  const char *url = argv[1];
  double rate = atof(argv[3]), seconds = atof(argv[4]);
  int start_conns = argc > 6 ? atoi(argv[6]) : 50;
  max_conns = argc > 7 ? atoi(argv[7]) : 600;
  if (argc > 8) timeout_s = atof(argv[8]);
  int port = 0;
  char ip[16];
  if (sscanf(url, "http://%15[0-9.]:%d", ip, &port) != 2 || rate <= 0 || seconds <= 0) {
    fprintf(stderr, "want http://IPv4:PORT, a positive rate and duration\n");
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
  snprintf(host, sizeof host, "%s:%d", ip, port);
  load_items(argv[2]);

  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  conns = calloc((size_t)max_conns, sizeof *conns);
  if (!conns) die("calloc");
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) die("timerfd_create");
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl");

  /* Open the first connections and let them connect before the clock starts. */
  for (int i = 0; i < start_conns && i < max_conns; i++) open_conn();
  struct epoll_event evs[256];
  double settle = now() + 2.0;
  while (now() < settle) {
    int waiting = 0;
    for (int i = 0; i < n_conns; i++) waiting += conns[i]->state == CONNECTING;
    if (!waiting) break;
    int n = epoll_wait(ep, evs, 256, 10);
    for (int i = 0; i < n; i++)
      if (evs[i].data.ptr) on_event(evs[i].data.ptr, evs[i].events, now());
  }
  long started_errors = errors;

  long total = (long)llround(rate * seconds);
  const char *trace_path = getenv("OPENLOOP_TRACE");
  if (trace_path && *trace_path && !(trace = fopen(trace_path, "w"))) die(trace_path);
  start = now() + 0.01;
  double last_due = start + (double)(total - 1) / rate;
  long next = 0;
  arm(tfd, start);
  double next_expiry = start + 0.1;
  for (;;) {
    int n = epoll_wait(ep, evs, 256, 100);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    double t = now();
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        uint64_t ticks;
        if (read(tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN) die("read timerfd");
        while (next < total) {
          double due = start + (double)next / rate;
          if (due > t) break;
          dispatch((int)(next % (long)n_items), due);
          next++;
        }
        if (next < total) arm(tfd, start + (double)next / rate);
      } else {
        on_event(evs[i].data.ptr, evs[i].events, t);
      }
    }
    if (t >= next_expiry) { expire(t); next_expiry = t + 0.1; }
    if (next >= total) {
      int busy = 0;
      for (int i = 0; i < n_conns; i++) busy += conns[i]->state != IDLE;
      if (!busy) break;
      if (t > last_due + GRACE_S) { errors += busy; break; }
    }
  }
  if (trace) fclose(trace);
  qsort(dec_ms.v, dec_ms.n, sizeof(double), cmp);
  qsort(fb_ms.v, fb_ms.n, sizeof(double), cmp);
  FILE *out = fopen(argv[5], "w");
  if (!out) die(argv[5]);
  fprintf(out,
          "{\"decisions\": %zu, \"feedback\": %zu, \"feedback_sent\": %ld, \"errors\": %ld, "
          "\"connect_errors\": %ld, \"failed_checks\": %ld, \"dropped\": %ld, "
          "\"connections\": %d, \"decision_ms\": {\"p50\": %.3f, \"p90\": %.3f, "
          "\"p99\": %.3f, \"max\": %.3f}, \"feedback_p99_ms\": ",
          dec_ms.n, fb_ms.n, fb_sent, errors - started_errors, started_errors, failed_checks, dropped, n_conns,
          quantile(&dec_ms, 0.5), quantile(&dec_ms, 0.9), quantile(&dec_ms, 0.99),
          dec_ms.n ? dec_ms.v[dec_ms.n - 1] : 0.0);
  if (fb_ms.n) fprintf(out, "%.3f}\n", quantile(&fb_ms, 0.99));
  else fprintf(out, "null}\n");
  fclose(out);
  return 0;
}

// bench_daemon_noop: noop jobs submitted and completed per second by a
// real trouped over ipc, durable (--durability full: SQLite
// synchronous=FULL, one fdatasync of the WAL per group commit), with K
// Submits in flight, and raw nng REQ/REP at the same K in the same run.
//
//   bench_daemon_noop [--inflight K] [--batch B] [--single-only]
//                     [--batch-only] [--n N] [--runs R] [--timeout S]
//
// Two modes: single (one job per Submit) and batch (B jobs per Submit,
// default 100). K threads share one tr_client (each call opens a context
// of its own) and each makes its share of the N jobs' Submits one after
// the other. The time runs from the first Submit to the moment the store
// holds no queued or running job (bench_wait_all: every job final, and
// its final state committed; it waits on the last id, then on what
// ListJobs still shows). A fresh daemon for every point, so one
// point's database does not slow the next; the median of --runs (1 unless
// given) is printed.
//
// Commits: trouped does not export its store's counters over the
// protocol, but it logs every Submit's commit ("event=submitted first_id=
// count= commit=C", C the store's commit counter) on stderr, which
// bench_daemon.h keeps in a file. A one-job probe Submit before the timed
// window (waited to its end) and one after it bracket the window's
// commits: C_after - C_before - 1 is every commit in it (Submits and the
// runner's start/finish updates alike), and the distinct commits of the
// window's Submits give jobs (and Submits) per commit. WAL checkpoints
// fsync too and are not commits: they are not counted. fdatasync p50 is
// measured by this program (4 KiB appended and fdatasync'd, 200 times, on
// a file in the first daemon's state directory before its point runs),
// not taken from the daemon.
//
// Raw nng: a REP0 socket on ipc with K contexts, each an aio callback
// that echoes what it receives (in a process of its own: this program
// run with --raw-echo), and a REQ0 socket with K contexts sending
// messages the size of the mode's Submit request and waiting for the echo
// (at least 10,000 round trips), two ways: each context an aio callback
// state machine (raw nng at its best: the peer's figure, and the ratio's
// denominator), and K threads each blocked in its own call, as this
// benchmark's client threads are in tr_client (the _threads line: what
// the client side's threads cost without the daemon). Round trips per
// second, against the daemon's Submits per second.
//
// Lines per point (mode, K): jobs/s, Submits/s, raw round trips/s, the
// ratio, Submit latency p50/p99, trouped's own CPU per job, commits/s,
// jobs and Submits per commit; then fdatasync p50/p99 once. The headline is batch mode at K = 16
// (the target: >= 50 k jobs/s), or the first point run. ok: every
// Submit answered with its count, every job succeeded, raw round trips
// all echoed; the target lines say whether the target was met.
#define _GNU_SOURCE
#include "bench_daemon.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

static uint64_t o_inflight = 0; // 0: 1, 16 and 128
static uint64_t o_batch = 100;
static bool o_single_only, o_batch_only;

#define TARGET_BATCH_K16 50000.0

typedef struct point {
    bool batch;
    uint64_t k, jobs, submits;
    double secs, jobs_s, submits_s, sub_p50_us, sub_p99_us;
    bool ok;
    char why[256];
    bool have_commits;
    uint64_t commits, submit_commits;
    double commits_s, jobs_per_commit, submits_per_commit;
    double raw_rt_s;  // callbacks
    double raw_thr_s; // blocking threads, as this benchmark's client
    double cpu_us;    // trouped's own CPU per job in the window (NAN: unread)
    bool raw_ok;
    size_t req_bytes;
} point;

// ---------------------------------------------------------------------------
// The daemon side.

typedef struct worker {
    tr_client *w_c;
    const Troupe__V1__SubmitBatch *w_b;
    uint64_t w_submits;
    double *w_lat; // seconds, one per Submit
    pthread_barrier_t *w_bar;
    uint64_t w_done;
    uint64_t w_last; // the highest id it was given
    bool w_ok;
    char w_why[256];
} worker;

static void *
worker_main(void *arg)
{
    worker *w = arg;
    w->w_ok = true;
    pthread_barrier_wait(w->w_bar);
    for (uint64_t i = 0; i < w->w_submits; i++) {
        uint64_t first = 0;
        uint32_t count = 0;
        double t = bench_now();
        tr_err rv = tr_client_submit(w->w_c, w->w_b, &first, &count);
        w->w_lat[i] = bench_now() - t;
        if (rv != TR_OK || count != w->w_b->n_jobs) {
            snprintf(w->w_why, sizeof w->w_why, "Submit: %s (%s), %u jobs of %zu", tr_strerror(rv),
                     tr_client_error(), count, w->w_b->n_jobs);
            w->w_ok = false;
            break;
        }
        w->w_done++;
        if (first + count - 1 > w->w_last) {
            w->w_last = first + count - 1;
        }
    }
    return NULL;
}

// probe submits one noop job and waits for its end: its id, or 0.
static uint64_t
probe(tr_client *c, const Troupe__V1__SubmitBatch *one)
{
    uint64_t first = 0;
    uint32_t count = 0;
    if (tr_client_submit(c, one, &first, &count) != TR_OK || count != 1) {
        return 0;
    }
    tr_msg *reply = NULL;
    bool timed_out = true;
    tr_err rv = tr_client_wait(c, &first, 1, 10000, &reply, &timed_out);
    tr_msg_free(reply);
    return rv == TR_OK && !timed_out ? first : 0;
}

typedef struct sub_line {
    uint64_t first, commit;
    uint32_t count;
} sub_line;

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

// count_commits reads trouped's log for the Submits between the probes
// pa and pb (exclusive): see the design notes. False if the log does not
// hold both probes' lines (a trouped that logs otherwise).
static bool
count_commits(const char *log, uint64_t pa, uint64_t pb, point *p)
{
    FILE *f = fopen(log, "r");
    if (f == NULL) {
        return false;
    }
    char line[1024];
    uint64_t ca = 0, cb = 0, jobs = 0;
    size_t n = 0, cap = 1024;
    uint64_t *commits = malloc(cap * sizeof *commits);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, "event=submitted ") == NULL) {
            continue;
        }
        const char *fi = strstr(line, " first_id="), *co = strstr(line, " count="),
                   *cm = strstr(line, " commit=");
        if (fi == NULL || co == NULL || cm == NULL) {
            continue;
        }
        sub_line s = {strtoull(fi + 10, NULL, 10), strtoull(cm + 8, NULL, 10),
                      (uint32_t)strtoul(co + 7, NULL, 10)};
        if (s.first == pa) {
            ca = s.commit;
        } else if (s.first == pb) {
            cb = s.commit;
        } else if (s.first > pa && s.first < pb) {
            if (n == cap) {
                cap *= 2;
                commits = realloc(commits, cap * sizeof *commits);
            }
            commits[n++] = s.commit;
            jobs += s.count;
        }
    }
    fclose(f);
    qsort(commits, n, sizeof *commits, cmp_u64);
    uint64_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || commits[i] != commits[i - 1]) {
            distinct++;
        }
    }
    free(commits);
    if (ca == 0 || cb <= ca || distinct == 0 || n != p->submits || jobs != p->jobs) {
        return false;
    }
    p->commits = cb - ca - 1;
    p->submit_commits = distinct;
    p->commits_s = (double)p->commits / p->secs;
    p->jobs_per_commit = (double)jobs / (double)distinct;
    p->submits_per_commit = (double)n / (double)distinct;
    return true;
}

// fsync_loop appends 4 KiB and fdatasyncs it, 200 times, in dir.
static void
fsync_loop(const char *dir, double *p50_us, double *p99_us)
{
    char path[160];
    snprintf(path, sizeof path, "%s/bench-fdatasync.tmp", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    *p50_us = *p99_us = NAN;
    if (fd < 0) {
        return;
    }
    enum { N = 200 };
    double lat[N];
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    size_t got = 0;
    for (int i = 0; i < N; i++) {
        double t = bench_now();
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
            break;
        }
        lat[got++] = bench_now() - t;
    }
    close(fd);
    unlink(path);
    *p50_us = bench_quantile(lat, got, 0.50) * 1e6;
    *p99_us = bench_quantile(lat, got, 0.99) * 1e6;
}

// The size of the ControlRequest envelope tr_client_submit sends for b.
static size_t
request_size(const Troupe__V1__SubmitBatch *b)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = bench_request_new(&req);
    req->request_id = "0123456789abcdef0123456789abcdef";
    Troupe__V1__Submit *s = tr_msg_arena(m, sizeof *s);
    troupe__v1__submit__init(s);
    s->batch = (Troupe__V1__SubmitBatch *)b;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT;
    req->submit = s;
    size_t n = tr_msg_packed_size(m);
    // The batch is the caller's: unhook it before the message is freed.
    req->submit = NULL;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST__NOT_SET;
    tr_msg_free(m);
    return n;
}

static void
run_daemon(point *p, bool measure_fsync, double *fs_p50, double *fs_p99)
{
    bench_daemon d;
    char *extra[] = {"--durability", "full", NULL};
    bench_daemon_start(&d, extra);
    if (measure_fsync) {
        fsync_loop(d.bd_state, fs_p50, fs_p99);
    }
    tr_client *c = bench_daemon_connect(&d);

    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    js.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    js.noop = &noop;
    uint64_t per = p->batch ? o_batch : 1;
    Troupe__V1__JobSpec **specs = calloc(per, sizeof *specs);
    for (uint64_t i = 0; i < per; i++) {
        specs[i] = &js;
    }
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = specs;
    b.n_jobs = per;
    b.job_count = (uint32_t)per;
    Troupe__V1__SubmitBatch one = b;
    one.n_jobs = 1;
    one.job_count = 1;
    p->req_bytes = request_size(&b);

    uint64_t each = p->jobs / per / p->k; // Submits per thread
    if (each == 0) {
        each = 1;
    }
    p->submits = each * p->k;
    p->jobs = p->submits * per;
    p->ok = true;
    uint64_t pa = probe(c, &one);
    worker *w = calloc(p->k, sizeof *w);
    pthread_t *th = calloc(p->k, sizeof *th);
    double *lat = calloc(p->submits, sizeof *lat);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)p->k + 1);
    for (uint64_t i = 0; i < p->k; i++) {
        w[i] = (worker){
            .w_c = c, .w_b = &b, .w_submits = each, .w_lat = lat + i * each, .w_bar = &bar};
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "bench_daemon_noop: pthread_create\n");
            exit(1);
        }
    }
    bench_cpu cpu0 = {0}, cpu1 = {0};
    bool have_cpu = bench_daemon_cpu(&d, &cpu0);
    pthread_barrier_wait(&bar);
    double t0 = bench_now();
    uint64_t done = 0, last = 0;
    for (uint64_t i = 0; i < p->k; i++) {
        pthread_join(th[i], NULL);
        done += w[i].w_done;
        last = w[i].w_last > last ? w[i].w_last : last;
        if (!w[i].w_ok && p->ok) {
            p->ok = false;
            snprintf(p->why, sizeof p->why, "%s", w[i].w_why);
        }
    }
    tr_err rv = bench_wait_all(c, last, 60000);
    p->secs = bench_now() - t0;
    have_cpu = bench_daemon_cpu(&d, &cpu1) && have_cpu;
    p->cpu_us =
        have_cpu && done > 0 ? (cpu1.cpu_self - cpu0.cpu_self) * 1e6 / (double)(done * per) : NAN;
    if (rv != TR_OK && p->ok) {
        p->ok = false;
        snprintf(p->why, sizeof p->why, "waiting for the jobs: %s (%s)", tr_strerror(rv),
                 tr_client_error());
    }
    p->jobs_s = (double)(done * per) / p->secs;
    p->submits_s = (double)done / p->secs;
    p->sub_p50_us = bench_quantile(lat, done, 0.50) * 1e6;
    p->sub_p99_us = bench_quantile(lat, done, 0.99) * 1e6;
    uint64_t pb = probe(c, &one);

    // Self-check, outside the window: every job of the point succeeded.
    uint64_t ok_jobs = 0;
    if (p->ok && (rv = bench_count_state(c, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED,
                                         &ok_jobs)) != TR_OK) {
        p->ok = false;
        snprintf(p->why, sizeof p->why, "ListJobs: %s (%s)", tr_strerror(rv), tr_client_error());
    }
    uint64_t want = p->jobs + (pa != 0) + (pb != 0);
    if (p->ok && ok_jobs != want) {
        p->ok = false;
        snprintf(p->why, sizeof p->why, "%llu jobs succeeded of %llu", (unsigned long long)ok_jobs,
                 (unsigned long long)want);
    }
    p->have_commits = pa != 0 && pb != 0 && p->ok && count_commits(d.bd_log, pa, pb, p);
    tr_client_close(c);
    if (!bench_daemon_stop(&d, 10000) && p->ok) {
        p->ok = false;
        snprintf(p->why, sizeof p->why, "trouped did not exit cleanly within 10 s of SIGTERM");
    }
    bench_daemon_free(&d);
    pthread_barrier_destroy(&bar);
    free(w);
    free(th);
    free(lat);
    free(specs);
}

// ---------------------------------------------------------------------------
// Raw nng REQ/REP.

typedef struct echo_ctx {
    nng_ctx e_ctx;
    nng_aio *e_aio;
    bool e_sending;
} echo_ctx;

static void
echo_cb(void *arg)
{
    echo_ctx *e = arg;
    int rv = nng_aio_result(e->e_aio);
    if (e->e_sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(e->e_aio));
            nng_aio_set_msg(e->e_aio, NULL);
        }
        e->e_sending = false;
        if (rv != NNG_ECLOSED) {
            nng_ctx_recv(e->e_ctx, e->e_aio);
        }
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED) {
            nng_ctx_recv(e->e_ctx, e->e_aio);
        }
        return;
    }
    e->e_sending = true;
    nng_ctx_send(e->e_ctx, e->e_aio); // the message received goes back
}

typedef struct raw_client {
    nng_socket rc_sock;
    uint64_t rc_n;
    size_t rc_size;
    pthread_barrier_t *rc_bar;
    uint64_t rc_done;
} raw_client;

static void *
raw_client_main(void *arg)
{
    raw_client *r = arg;
    nng_ctx ctx;
    nng_aio *aio;
    bool ready = nng_ctx_open(&ctx, r->rc_sock) == 0 && nng_aio_alloc(&aio, NULL, NULL) == 0;
    pthread_barrier_wait(r->rc_bar);
    for (uint64_t i = 0; ready && i < r->rc_n; i++) {
        nng_msg *m;
        if (nng_msg_alloc(&m, r->rc_size) != 0) {
            break;
        }
        memset(nng_msg_body(m), 0x5a, r->rc_size);
        nng_aio_set_timeout(aio, 10000);
        nng_aio_set_msg(aio, m);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            nng_msg_free(m);
            break;
        }
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            break;
        }
        m = nng_aio_get_msg(aio);
        bool same = nng_msg_len(m) == r->rc_size;
        nng_msg_free(m);
        if (!same) {
            break;
        }
        r->rc_done++;
    }
    if (ready) {
        nng_aio_free(aio);
        nng_ctx_close(ctx);
    }
    return NULL;
}

// The echo server: this program again (--raw-echo URL K), so that it
// runs in its own process with its own nng threads. It prints READY once
// it listens and stops when its stdin closes.
static int
raw_echo_main(const char *url, uint64_t k)
{
    nng_socket rep;
    echo_ctx *ec = calloc(k, sizeof *ec);
    if (nng_rep0_open(&rep) != 0 || nng_listen(rep, url, NULL, 0) != 0) {
        fprintf(stderr, "bench_daemon_noop: raw REP on %s\n", url);
        return 1;
    }
    for (uint64_t i = 0; i < k; i++) {
        if (nng_ctx_open(&ec[i].e_ctx, rep) != 0 || nng_aio_alloc(&ec[i].e_aio, echo_cb, &ec[i])) {
            fprintf(stderr, "bench_daemon_noop: raw REP contexts\n");
            return 1;
        }
        nng_ctx_recv(ec[i].e_ctx, ec[i].e_aio);
    }
    printf("READY\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    nng_close(rep);
    for (uint64_t i = 0; i < k; i++) {
        nng_aio_stop(ec[i].e_aio);
        nng_msg *left = nng_aio_get_msg(ec[i].e_aio);
        if (left != NULL) {
            nng_msg_free(left);
        }
        nng_aio_free(ec[i].e_aio);
    }
    free(ec);
    nng_fini();
    return 0;
}

typedef struct echo_server {
    pid_t es_pid;
    int es_in;
} echo_server;

static void
echo_server_start(echo_server *es, const char *url, uint64_t k)
{
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    int pin[2], pout[2];
    if (len <= 0 || pipe2(pin, O_CLOEXEC) != 0 || pipe2(pout, O_CLOEXEC) != 0) {
        perror("bench_daemon_noop: the echo server");
        exit(1);
    }
    self[len] = '\0';
    char ks[32];
    snprintf(ks, sizeof ks, "%llu", (unsigned long long)k);
    char *argv[] = {self, "--raw-echo", (char *)url, ks, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    int rv = posix_spawn(&es->es_pid, self, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pin[0]);
    close(pout[1]);
    char line[16] = "";
    ssize_t n = rv == 0 ? read(pout[0], line, sizeof line - 1) : -1;
    close(pout[0]);
    if (n < 5 || strncmp(line, "READY", 5) != 0) {
        fprintf(stderr, "bench_daemon_noop: the echo server did not start\n");
        exit(1);
    }
    es->es_in = pin[1];
    bench_dwatch_own(es->es_pid, NULL);
}

static void
echo_server_stop(echo_server *es)
{
    close(es->es_in);
    waitpid(es->es_pid, NULL, 0);
    bench_dwatch_drop(es->es_pid, NULL);
}

// The callback client: K contexts, each a two-state machine (send, then
// receive, then the next send) run by nng's own threads, no thread of
// ours blocked per request: raw nng at its best.
typedef struct cb_shared {
    pthread_mutex_t sh_mu;
    pthread_cond_t sh_cv;
    uint64_t sh_finished; // contexts done, under sh_mu
} cb_shared;

typedef struct cb_client {
    nng_ctx cc_ctx;
    nng_aio *cc_aio;
    bool cc_receiving;
    size_t cc_size;
    uint64_t cc_left, cc_done;
    cb_shared *cc_sh;
} cb_client;

static void
cb_finish(cb_client *c)
{
    pthread_mutex_lock(&c->cc_sh->sh_mu);
    c->cc_sh->sh_finished++;
    pthread_cond_signal(&c->cc_sh->sh_cv);
    pthread_mutex_unlock(&c->cc_sh->sh_mu);
}

static void
cb_send(cb_client *c)
{
    nng_msg *m;
    if (nng_msg_alloc(&m, c->cc_size) != 0) {
        cb_finish(c);
        return;
    }
    memset(nng_msg_body(m), 0x5a, c->cc_size);
    c->cc_receiving = false;
    nng_aio_set_timeout(c->cc_aio, 10000);
    nng_aio_set_msg(c->cc_aio, m);
    nng_ctx_send(c->cc_ctx, c->cc_aio);
}

static void
cb_client_cb(void *arg)
{
    cb_client *c = arg;
    int rv = nng_aio_result(c->cc_aio);
    if (!c->cc_receiving) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->cc_aio));
            nng_aio_set_msg(c->cc_aio, NULL);
            cb_finish(c);
            return;
        }
        c->cc_receiving = true;
        nng_ctx_recv(c->cc_ctx, c->cc_aio);
        return;
    }
    if (rv != 0) {
        cb_finish(c);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->cc_aio);
    nng_aio_set_msg(c->cc_aio, NULL);
    bool same = nng_msg_len(m) == c->cc_size;
    nng_msg_free(m);
    if (!same) {
        cb_finish(c);
        return;
    }
    c->cc_done++;
    if (--c->cc_left == 0) {
        cb_finish(c);
        return;
    }
    cb_send(c);
}

// run_raw measures raw REQ/REP round trips per second at p->k in flight,
// with blocking threads (threads) or callbacks; *ok: every one echoed.
static double
run_raw(const point *p, bool threads, bool *ok)
{
    uint64_t n = p->submits > 10000 ? p->submits : 10000;
    uint64_t each = (n + p->k - 1) / p->k;
    char dir[80];
    bench_tmpdir(dir, sizeof dir, "troupe-bench-raw");
    bench_dwatch_own(0, dir);
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/raw.sock", dir);
    // The echo server is a process of its own, as trouped is.
    echo_server es;
    echo_server_start(&es, url, p->k);
    nng_socket req;
    if (nng_req0_open(&req) != 0 || nng_socket_set_ms(req, NNG_OPT_REQ_RESENDTIME, 0) != 0 ||
        nng_dial(req, url, NULL, 0) != 0) {
        fprintf(stderr, "bench_daemon_noop: raw REQ to %s\n", url);
        exit(1);
    }
    uint64_t done = 0;
    double t0, secs;
    if (threads) {
        raw_client *rc = calloc(p->k, sizeof *rc);
        pthread_t *th = calloc(p->k, sizeof *th);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)p->k + 1);
        for (uint64_t i = 0; i < p->k; i++) {
            rc[i] =
                (raw_client){.rc_sock = req, .rc_n = each, .rc_size = p->req_bytes, .rc_bar = &bar};
            pthread_create(&th[i], NULL, raw_client_main, &rc[i]);
        }
        pthread_barrier_wait(&bar);
        t0 = bench_now();
        for (uint64_t i = 0; i < p->k; i++) {
            pthread_join(th[i], NULL);
            done += rc[i].rc_done;
        }
        secs = bench_now() - t0;
        pthread_barrier_destroy(&bar);
        free(rc);
        free(th);
    } else {
        cb_shared sh = {.sh_mu = PTHREAD_MUTEX_INITIALIZER, .sh_cv = PTHREAD_COND_INITIALIZER};
        cb_client *cc = calloc(p->k, sizeof *cc);
        for (uint64_t i = 0; i < p->k; i++) {
            cc[i] = (cb_client){.cc_size = p->req_bytes, .cc_left = each, .cc_sh = &sh};
            if (nng_ctx_open(&cc[i].cc_ctx, req) != 0 ||
                nng_aio_alloc(&cc[i].cc_aio, cb_client_cb, &cc[i]) != 0) {
                fprintf(stderr, "bench_daemon_noop: raw REQ contexts\n");
                exit(1);
            }
        }
        t0 = bench_now();
        for (uint64_t i = 0; i < p->k; i++) {
            cb_send(&cc[i]);
        }
        pthread_mutex_lock(&sh.sh_mu);
        while (sh.sh_finished < p->k) {
            pthread_cond_wait(&sh.sh_cv, &sh.sh_mu);
        }
        pthread_mutex_unlock(&sh.sh_mu);
        secs = bench_now() - t0;
        for (uint64_t i = 0; i < p->k; i++) {
            done += cc[i].cc_done;
            nng_aio_free(cc[i].cc_aio);
            nng_ctx_close(cc[i].cc_ctx);
        }
        free(cc);
    }
    *ok = done == each * p->k;
    nng_close(req);
    echo_server_stop(&es);
    bench_dwatch_drop(0, dir);
    bench_rm_rf(dir);
    return (double)done / secs;
}

// ---------------------------------------------------------------------------
// Output.

static void
emit(const bench_args *a, const point *p, const char *what, double value, const char *unit, bool ok,
     const char *extra)
{
    char metric[128], fields[768] = "";
    snprintf(metric, sizeof metric, "%s_inflight_%llu_%s", p->batch ? "batch" : "single",
             (unsigned long long)p->k, what);
    bench_dfield(fields, sizeof fields, "synchronous", "FULL");
    if (!p->ok) {
        bench_dfield(fields, sizeof fields, "reason", p->why);
    }
    if (extra != NULL) {
        snprintf(fields + strlen(fields), sizeof fields - strlen(fields), "%s", extra);
    }
    bench_dline(a, metric, value, unit, ok, fields);
}

static void
emit_point(const bench_args *a, const point *p)
{
    char extra[512] = "", num[64];
    snprintf(num, sizeof num, "%llu", (unsigned long long)(p->batch ? o_batch : 1));
    bench_dfield(extra, sizeof extra, "jobs_per_submit", num);
    if (p->batch && p->k == 16) {
        char t[96];
        snprintf(t, sizeof t, ">= %.0f jobs/s: %s", TARGET_BATCH_K16,
                 p->jobs_s >= TARGET_BATCH_K16 ? "met" : "missed");
        bench_dfield(extra, sizeof extra, "target", t);
    }
    emit(a, p, "jobs", p->jobs_s, "jobs/s", p->ok, extra);
    emit(a, p, "submits", p->submits_s, "submits/s", p->ok, NULL);
    char rb[128] = "";
    snprintf(num, sizeof num, "%zu", p->req_bytes);
    bench_dfield(rb, sizeof rb, "message_bytes", num);
    emit(a, p, "raw_nng_round_trips", p->raw_rt_s, "round_trips/s", p->raw_ok, rb);
    emit(a, p, "raw_nng_threads_round_trips", p->raw_thr_s, "round_trips/s", p->raw_ok, rb);
    emit(a, p, "submits_vs_raw", p->raw_rt_s > 0 ? p->submits_s / p->raw_rt_s : NAN, "ratio",
         p->ok && p->raw_ok, NULL);
    emit(a, p, "submit_p50", p->sub_p50_us, "us", p->ok, NULL);
    emit(a, p, "submit_p99", p->sub_p99_us, "us", p->ok, NULL);
    char cf[256] = "";
    bench_dfield(cf, sizeof cf, "note",
                 "utime + stime of trouped's threads from /proc/<pid>/stat over the window "
                 "(10 ms ticks)");
    emit(a, p, "daemon_cpu_per_job", p->cpu_us, "us", !isnan(p->cpu_us), cf);
    char src[256] = "";
    bench_dfield(src, sizeof src, "source",
                 p->have_commits ? "trouped's log: event=submitted commit=, between two probes"
                                 : "not measured: trouped's log lacked the probes' commit numbers");
    double nan = NAN;
    emit(a, p, "commits", p->have_commits ? p->commits_s : nan, "commits/s", p->have_commits, src);
    if (!p->batch && p->k == 16 && p->have_commits) {
        char t[96] = "";
        bench_dfield(t, sizeof t, "bound", "16 jobs per fsync (16 Submits in flight)");
        emit(a, p, "jobs_per_commit", p->jobs_per_commit, "jobs/commit", p->have_commits, t);
    } else {
        emit(a, p, "jobs_per_commit", p->have_commits ? p->jobs_per_commit : nan, "jobs/commit",
             p->have_commits, NULL);
    }
    emit(a, p, "submits_per_commit", p->have_commits ? p->submits_per_commit : nan,
         "submits/commit", p->have_commits, NULL);
}

static int
cmp_point(const void *x, const void *y)
{
    double a = ((const point *)x)->jobs_s, b = ((const point *)y)->jobs_s;
    return (a > b) - (a < b);
}

int
main(int argc, char **argv)
{
    static const bench_opt opts[] = {
        {"--inflight", "Submits in flight (0: 1, 16 and 128)", &o_inflight, NULL},
        {"--batch", "jobs per Submit in batch mode (default 100)", &o_batch, NULL},
        {"--single-only", "only single-job Submits", NULL, &o_single_only},
        {"--batch-only", "only batch Submits", NULL, &o_batch_only},
    };
    static const bench_def def = {"daemon_noop", 20000, 0, opts, 4};
    if (argc == 4 && strcmp(argv[1], "--raw-echo") == 0) {
        return raw_echo_main(argv[2], strtoull(argv[3], NULL, 10));
    }
    bench_args a = bench_parse(argc, argv, &def);
    unsigned runs = bench_explicit_runs(argc, argv, &a);
    if (o_batch == 0 || o_batch > 4096 || (o_single_only && o_batch_only)) {
        fprintf(stderr, "bench_daemon_noop: --batch 1 to 4096; --single-only or --batch-only\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bench_daemon_env(&a);
    uint64_t ks[3] = {1, 16, 128};
    size_t nk = 3;
    if (o_inflight != 0) {
        ks[0] = o_inflight;
        nk = 1;
    }
    point pts[8];
    size_t np = 0;
    double fs_p50 = NAN, fs_p99 = NAN;
    for (int mode = 0; mode < 2; mode++) {
        bool batch = mode == 0;
        if ((batch && o_single_only) || (!batch && o_batch_only)) {
            continue;
        }
        for (size_t i = 0; i < nk; i++) {
            point r[16];
            unsigned nr = runs < 16 ? runs : 16;
            for (unsigned run = 0; run < nr; run++) {
                char what[96];
                snprintf(what, sizeof what, "%s K=%llu run %u", batch ? "batch" : "single",
                         (unsigned long long)ks[i], run + 1);
                fprintf(stderr, "bench_daemon_noop: %s\n", what);
                bench_dwatch_arm(&a, what);
                r[run] = (point){.batch = batch, .k = ks[i], .jobs = a.n};
                run_daemon(&r[run], np == 0 && run == 0, &fs_p50, &fs_p99);
                r[run].raw_rt_s = run_raw(&r[run], false, &r[run].raw_ok);
                bool thr_ok;
                r[run].raw_thr_s = run_raw(&r[run], true, &thr_ok);
                r[run].raw_ok = r[run].raw_ok && thr_ok;
                bench_dwatch_disarm();
            }
            qsort(r, nr, sizeof *r, cmp_point);
            pts[np++] = r[nr / 2];
        }
    }
    // The headline first: batch at K = 16 when it ran.
    size_t head = 0;
    for (size_t i = 0; i < np; i++) {
        if (pts[i].batch && pts[i].k == 16) {
            head = i;
        }
    }
    bool all_ok = true;
    emit_point(&a, &pts[head]);
    for (size_t i = 0; i < np; i++) {
        if (i != head) {
            emit_point(&a, &pts[i]);
        }
        all_ok = all_ok && pts[i].ok && pts[i].raw_ok;
    }
    char note[256] = "";
    bench_dfield(note, sizeof note, "note",
                 "measured by the benchmark: 4 KiB appended + fdatasync, 200 times, on a file in "
                 "trouped's state dir; the daemon does not export its commit times");
    bench_dline(&a, "fdatasync_p50", fs_p50, "us", !isnan(fs_p50), note);
    bench_dline(&a, "fdatasync_p99", fs_p99, "us", !isnan(fs_p99), note);
    nng_fini();
    return all_ok ? 0 : 1;
}

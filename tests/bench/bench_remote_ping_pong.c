// bench_remote_ping_pong: request/reply between two processes, troupe's
// nodes (troupe/node.h) against raw nng, side by side in one run.
//
//   bench_remote_ping_pong [--transport ipc|tcp|tls] [--inflight K] [--n N]
//
// troupe: this process is a node with --workers workers; the server (this
// program again, in its own process) is a node with an "echo" actor that
// answers each request with the request itself. K tasks each call echo
// (tr_actor_call) one request after the other, N round trips in all.
//
// raw nng: the same shape without troupe: each side a PULL listener and a
// PUSH dialed to the other (the protocol the nodes use), an aio callback
// that receives, and a non-blocking send of the answer from that callback;
// messages of the size of troupe's records (an envelope and its 12-byte
// header), one per nng message; K messages in flight. troupe's links
// batch (the records a worker's run of polls sends a peer leave in one
// nng message): envelopes_per_frame says by how much, on the client side.
//
// Each point (K = 1, 16 and 128 unless --inflight is given) prints
// round_trips/s, p50 and p99 latency (µs) for both, and troupe/raw. The
// headline is troupe's sequential (K = 1) round trips/s; ok is every answer
// arrived. tcp means tcp://127.0.0.1 (plain tcp behind the nodes' test
// flag); tls means tls+tcp://127.0.0.1 with a self-signed certificate made
// with openssl.
#define _GNU_SOURCE
#include "bench.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/supplemental/tls/tls.h>
#include <troupe/actor.h>
#include <troupe/envelope.h>
#include <troupe/node.h>

extern char **environ;

static uint64_t o_inflight = 0; // 0: 1, 16 and 128
static bool o_tcp, o_tls;
static bool o_troupe_only, o_raw_only; // profiling: one side alone

static const char *g_cert, *g_both; // tls files
static char g_tlsdir[64];

// ---------------------------------------------------------------------------
// The server side: `--serve troupe URL` or `--serve raw URL PEER_URL`.

static void
echo_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_correlation(m) != 0) {
        tr_actor_keep(self, m);
        tr_actor_reply(self, m, m);
    }
}

static const tr_actor_spec echo_spec = {.name = "echo", .receive = echo_receive};

typedef struct wait_root {
    tr_sem *sem;
    tr_sem_acquire_op op;
    tr_err err;
} wait_root;

static tr_poll
wait_poll(void *st, tr_cx *cx)
{
    wait_root *w = st;
    return tr_sem_acquire(w->sem, cx, &w->op, 1, &w->err);
}

static const tr_task_spec wait_spec = {"wait", wait_poll, NULL, sizeof(wait_root)};

static void
node_opts_for(tr_node_opts *o, const char *url)
{
    memset(o, 0, sizeof *o);
    o->listen = url;
    o->token = "bench";
    o->allow_plain_tcp = true;
    o->sendbuf = 4096;
    if (strncmp(url, "tls+tcp://", 10) == 0) {
        o->tls_cert_key_file = g_both;
        o->tls_ca_file = g_cert;
    }
}

typedef struct stopper {
    tr_node *node;
    tr_sem *sem;
} stopper;

static void *
stdin_wait(void *arg)
{
    stopper *s = arg;
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    if (s->node != NULL) {
        tr_node_stop(s->node);
    }
    tr_sem_release(s->sem, 1);
    return NULL;
}

static int
serve_troupe(const char *url)
{
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = 2;
    tr_rt *rt;
    if (tr_rt_new(&cfg, &rt) != TR_OK) {
        return 1;
    }
    tr_node_opts o;
    node_opts_for(&o, url);
    tr_node *n;
    tr_err e = tr_node_start(rt, &o, &n);
    if (e != TR_OK) {
        fprintf(stderr, "server: tr_node_start(%s): %s\n", url, tr_strerror(e));
        return 1;
    }
    tr_actor_opts ao = {.name = "echo"};
    tr_actor_spawn(rt, &echo_spec, NULL, &ao, NULL);
    printf("URL %s\n", tr_node_listen_url(n));
    fflush(stdout);
    tr_sem *sem;
    tr_sem_new(0, &sem);
    stopper s = {n, sem};
    pthread_t th;
    pthread_create(&th, NULL, stdin_wait, &s);
    wait_root w = {.sem = sem};
    tr_rt_run(rt, &wait_spec, NULL, &w, NULL);
    pthread_join(th, NULL);
    tr_rt_free(rt);
    tr_sem_free(sem);
    nng_fini();
    return 0;
}

// Raw nng: a PULL, a PUSH and one receive aio per side.
typedef struct raw_side {
    nng_socket pull, push;
    nng_aio *rx;
    nng_tls_config *tls_s, *tls_c;
    // Client only:
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t want, got, sent;
    double *lat; // seconds, one per answer
    bool client;
} raw_side;

static double
raw_stamp(nng_msg *m)
{
    double t;
    memcpy(&t, nng_msg_body(m), sizeof t);
    return t;
}

static void
raw_cb(void *arg)
{
    raw_side *r = arg;
    if (nng_aio_result(r->rx) != 0) {
        return;
    }
    nng_msg *m = nng_aio_get_msg(r->rx);
    nng_aio_set_msg(r->rx, NULL);
    if (!r->client) {
        if (nng_sendmsg(r->push, m, NNG_FLAG_NONBLOCK) != 0) {
            nng_msg_free(m);
        }
        nng_recv_aio(r->pull, r->rx);
        return;
    }
    double now = bench_now();
    pthread_mutex_lock(&r->mu);
    if (r->got < r->want) {
        r->lat[r->got] = now - raw_stamp(m);
    }
    r->got++;
    bool more = r->sent < r->want;
    if (more) {
        r->sent++;
    }
    if (r->got >= r->want) {
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (more) {
        memcpy(nng_msg_body(m), &now, sizeof now);
        if (nng_sendmsg(r->push, m, NNG_FLAG_NONBLOCK) != 0) {
            nng_msg_free(m);
        }
    } else {
        nng_msg_free(m);
    }
    nng_recv_aio(r->pull, r->rx);
}

static int
raw_open(raw_side *r, const char *listen, const char *dial, char *bound, size_t bound_len)
{
    int rv;
    nng_listener l;
    if ((rv = nng_pull0_open(&r->pull)) != 0 || (rv = nng_push0_open(&r->push)) != 0) {
        return rv;
    }
    nng_socket_set_int(r->push, NNG_OPT_SENDBUF, 4096);
    nng_socket_set_int(r->pull, NNG_OPT_RECVBUF, 4096);
    bool tls = strncmp(listen, "tls+tcp://", 10) == 0;
    if ((rv = nng_listener_create(&l, r->pull, listen)) != 0) {
        return rv;
    }
    if (tls) {
        nng_tls_config_alloc(&r->tls_s, NNG_TLS_MODE_SERVER);
        nng_tls_config_cert_key_file(r->tls_s, g_both, NULL);
        nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, r->tls_s);
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        return rv;
    }
    const char *colon = strrchr(listen, ':');
    if (bound != NULL) {
        if (strncmp(listen, "ipc://", 6) != 0 && colon != NULL && strcmp(colon, ":0") == 0) {
            int port = 0;
            nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port);
            snprintf(bound, bound_len, "%.*s:%d", (int)(colon - listen), listen, port);
        } else {
            snprintf(bound, bound_len, "%s", listen);
        }
    }
    if (dial != NULL) {
        nng_dialer d;
        if ((rv = nng_dialer_create(&d, r->push, dial)) != 0) {
            return rv;
        }
        if (strncmp(dial, "tls+tcp://", 10) == 0) {
            nng_tls_config_alloc(&r->tls_c, NNG_TLS_MODE_CLIENT);
            nng_tls_config_ca_file(r->tls_c, g_cert);
            nng_tls_config_server_name(r->tls_c, "localhost");
            nng_tls_config_auth_mode(r->tls_c, NNG_TLS_AUTH_MODE_REQUIRED);
            nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, r->tls_c);
        }
        if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
            return rv;
        }
    }
    if ((rv = nng_aio_alloc(&r->rx, raw_cb, r)) != 0) {
        return rv;
    }
    nng_recv_aio(r->pull, r->rx);
    return 0;
}

static void
raw_close(raw_side *r)
{
    nng_aio_stop(r->rx);
    nng_msg *left = nng_aio_get_msg(r->rx);
    if (left != NULL) {
        nng_msg_free(left);
    }
    nng_close(r->pull);
    nng_close(r->push);
    nng_aio_free(r->rx);
    if (r->tls_s != NULL) {
        nng_tls_config_free(r->tls_s);
    }
    if (r->tls_c != NULL) {
        nng_tls_config_free(r->tls_c);
    }
}

static int
serve_raw(const char *url, const char *peer)
{
    raw_side r = {0};
    char bound[256];
    int rv = raw_open(&r, url, peer, bound, sizeof bound);
    if (rv != 0) {
        fprintf(stderr, "server: raw %s: %s\n", url, nng_strerror(rv));
        return 1;
    }
    printf("URL %s\n", bound);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    raw_close(&r);
    nng_fini();
    return 0;
}

// ---------------------------------------------------------------------------
// The client side.

typedef struct server {
    pid_t pid;
    int in;
    FILE *out;
    char url[256];
} server;

static char g_self[4096];
static int g_seq;

static void
server_start(server *s, const char *mode, const char *url, const char *peer)
{
    int pin[2], pout[2];
    if (pipe2(pin, O_CLOEXEC) != 0 || pipe2(pout, O_CLOEXEC) != 0) {
        perror("pipe2");
        exit(1);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    char *argv[] = {g_self,
                    "--serve",
                    (char *)mode,
                    (char *)url,
                    (char *)(peer != NULL ? peer : "-"),
                    (char *)(g_both != NULL ? g_both : "-"),
                    (char *)(g_cert != NULL ? g_cert : "-"),
                    NULL};
    if (posix_spawn(&s->pid, g_self, &fa, NULL, argv, environ) != 0) {
        perror("posix_spawn");
        exit(1);
    }
    posix_spawn_file_actions_destroy(&fa);
    close(pin[0]);
    close(pout[1]);
    s->in = pin[1];
    s->out = fdopen(pout[0], "r");
    if (fscanf(s->out, "URL %255s", s->url) != 1) {
        fprintf(stderr, "bench_remote_ping_pong: the server did not start\n");
        exit(1);
    }
}

static void
server_stop(server *s)
{
    close(s->in);
    waitpid(s->pid, NULL, 0);
    fclose(s->out);
}

static void
fresh_url(char *buf, size_t len)
{
    if (o_tls) {
        snprintf(buf, len, "tls+tcp://127.0.0.1:0");
    } else if (o_tcp) {
        snprintf(buf, len, "tcp://127.0.0.1:0");
    } else {
        snprintf(buf, len, "ipc:///tmp/troupe-bench-rpp-%d-%d.sock", (int)getpid(), g_seq++);
    }
}

typedef struct point {
    double rps, p50_us, p99_us;
    double per_frame; // troupe: envelopes per nng message this side sent
    bool ok;
} point;

static point
figures(double *lat, uint64_t n, double secs, uint64_t got)
{
    point p = {.rps = (double)got / secs, .ok = got == n};
    qsort(lat, n, sizeof(double), bench_cmp_double);
    p.p50_us = lat[n / 2] * 1e6;
    p.p99_us = lat[(n * 99) / 100] * 1e6;
    return p;
}

// The size of troupe's request envelope (the raw messages match it).
static size_t
troupe_msg_size(void)
{
    Troupe__V1__Address *a;
    tr_msg *m = tr_msg_new(&troupe__v1__address__descriptor, 0, (void **)&a);
    a->node = 5;
    a->actor = 123456;
    tr_msg_set_reply_to(m, (tr_actor_addr){0x1234567890abcdefull, 0x100000040ull});
    size_t n = tr_msg_packed_size(m) + 12; // a record: actor, length, envelope
    tr_msg_free(m);
    return n;
}

static point
run_raw(uint64_t n, uint64_t k)
{
    raw_side r = {.client = true, .want = n};
    pthread_mutex_init(&r.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.cv, &ca);
    r.lat = calloc(n, sizeof(double));
    char mine[256], bound[256];
    fresh_url(mine, sizeof mine);
    // Listen first (the server dials back), then start the server.
    if (raw_open(&r, mine, NULL, bound, sizeof bound) != 0) {
        fprintf(stderr, "raw client: cannot listen\n");
        exit(1);
    }
    char theirs[256];
    fresh_url(theirs, sizeof theirs);
    server s;
    server_start(&s, "raw", theirs, bound);
    nng_dialer d;
    nng_tls_config *tc = NULL;
    nng_dialer_create(&d, r.push, s.url);
    if (o_tls) {
        nng_tls_config_alloc(&tc, NNG_TLS_MODE_CLIENT);
        nng_tls_config_ca_file(tc, g_cert);
        nng_tls_config_server_name(tc, "localhost");
        nng_tls_config_auth_mode(tc, NNG_TLS_AUTH_MODE_REQUIRED);
        nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tc);
    }
    nng_dialer_start(d, 0);
    size_t size = troupe_msg_size();
    // Warm the links both ways before timing.
    double t0 = bench_now();
    pthread_mutex_lock(&r.mu);
    r.sent = k < n ? k : n;
    pthread_mutex_unlock(&r.mu);
    for (uint64_t i = 0; i < k && i < n; i++) {
        nng_msg *m;
        nng_msg_alloc(&m, size);
        memset(nng_msg_body(m), 0, size);
        double now = bench_now();
        memcpy(nng_msg_body(m), &now, sizeof now);
        nng_sendmsg(r.push, m, 0);
    }
    pthread_mutex_lock(&r.mu);
    while (r.got < r.want) {
        pthread_cond_wait(&r.cv, &r.mu);
    }
    pthread_mutex_unlock(&r.mu);
    double secs = bench_now() - t0;
    point p = figures(r.lat, n, secs, r.got);
    raw_close(&r);
    if (tc != NULL) {
        nng_tls_config_free(tc);
    }
    server_stop(&s);
    free(r.lat);
    return p;
}

// troupe: K caller tasks.
typedef struct caller {
    int tr_pc;
    tr_actor_addr to;
    uint64_t n, i, ok;
    double *lat;
    double t;
    tr_actor_op op;
    tr_msg *req, *reply;
    tr_err err;
} caller;

static tr_poll
caller_poll(void *arg, tr_cx *cx)
{
    caller *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        Troupe__V1__Address *a;
        st->req = tr_msg_new(&troupe__v1__address__descriptor, 0, (void **)&a);
        a->node = 5;
        a->actor = st->i;
        st->t = bench_now();
        TR_AWAIT(st, tr_actor_call(st->to, cx, &st->op, st->req, 0, &st->reply, &st->err));
        if (st->err != TR_OK) {
            break;
        }
        st->lat[st->i] = bench_now() - st->t;
        st->ok++;
        tr_msg_free(st->reply);
    }
    tr_cx_set_result_u64(cx, st->ok);
    TR_END(st);
}

static const tr_task_spec caller_spec = {"caller", caller_poll, NULL, sizeof(caller)};

typedef struct run_arg {
    tr_rt *rt;
    wait_root *w;
} run_arg;

// runner runs the client's runtime (a root that waits for the semaphore)
// while the main thread drives the benchmark as a plain thread.
static void *
runner(void *arg)
{
    run_arg *ra = arg;
    tr_rt_run(ra->rt, &wait_spec, NULL, ra->w, NULL);
    return NULL;
}

static point
run_troupe(bench_args *a, uint64_t n, uint64_t k)
{
    char theirs[256], mine[256];
    fresh_url(theirs, sizeof theirs);
    server s;
    server_start(&s, "troupe", theirs, NULL);
    tr_rt *rt = bench_rt_new(a);
    // The runtime's workers run while this thread waits (a root that waits
    // for a semaphore, on a thread of its own).
    tr_sem *sem;
    tr_sem_new(0, &sem);
    fresh_url(mine, sizeof mine);
    tr_node_opts o;
    node_opts_for(&o, mine);
    tr_node *node;
    tr_err e = tr_node_start(rt, &o, &node);
    if (e != TR_OK) {
        fprintf(stderr, "client: tr_node_start: %s\n", tr_strerror(e));
        exit(1);
    }
    wait_root w = {.sem = sem};
    run_arg ra = {rt, &w};
    pthread_t th;
    pthread_create(&th, NULL, runner, &ra);
    uint64_t peer = 0;
    if ((e = tr_node_connect(node, s.url, 10000, &peer)) != TR_OK) {
        fprintf(stderr, "client: connect %s: %s\n", s.url, tr_strerror(e));
        exit(1);
    }
    tr_actor_addr echo;
    if ((e = tr_node_whereis(node, peer, "echo", 10000, &echo)) != TR_OK) {
        fprintf(stderr, "client: whereis echo: %s\n", tr_strerror(e));
        exit(1);
    }
    double *lat = calloc(n, sizeof(double));
    tr_join *j = calloc(k, sizeof(tr_join));
    uint64_t each = n / k;
    double t0 = bench_now();
    for (uint64_t i = 0; i < k; i++) {
        caller c = {.to = echo, .n = each, .lat = lat + i * each};
        tr_spawn(rt, &caller_spec, NULL, &c, &j[i]);
    }
    uint64_t got = 0;
    for (uint64_t i = 0; i < k; i++) {
        tr_outcome out;
        tr_join_wait(&j[i], &out);
        got += out.value.u64;
    }
    double secs = bench_now() - t0;
    point p = figures(lat, each * k, secs, got);
    tr_node_stats st;
    tr_node_stats_get(node, &st);
    p.per_frame = st.frames_sent > 0 ? (double)st.sent / (double)st.frames_sent : 0;
    tr_node_stop(node);
    tr_sem_release(sem, 1);
    pthread_join(th, NULL);
    tr_rt_free(rt);
    tr_sem_free(sem);
    free(lat);
    free(j);
    server_stop(&s);
    return p;
}

static bool
make_cert(void)
{
    static char cert[128], both[128];
    snprintf(g_tlsdir, sizeof g_tlsdir, "/tmp/troupe-bench-tls-%d", (int)getpid());
    snprintf(cert, sizeof cert, "%s/cert.pem", g_tlsdir);
    snprintf(both, sizeof both, "%s/both.pem", g_tlsdir);
    char cmd[1024];
    snprintf(
        cmd, sizeof cmd,
        "mkdir -p %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
        "-nodes -keyout %s/key.pem -out %s -days 2 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null && cat %s %s/key.pem > %s",
        g_tlsdir, g_tlsdir, cert, cert, g_tlsdir, both);
    if (system(cmd) != 0) {
        return false;
    }
    g_cert = cert;
    g_both = both;
    return true;
}

// emit prints one figure of the point with k requests in flight.
static void
emit(const bench_args *a, const char *transport, uint64_t k, const char *what, double value,
     const char *unit, bool ok)
{
    char metric[96];
    snprintf(metric, sizeof metric, "%s_inflight_%llu_%s", transport, (unsigned long long)k, what);
    bench_line(a, metric, value, unit, ok);
}

int
main(int argc, char **argv)
{
    if (argc >= 6 && strcmp(argv[1], "--serve") == 0) {
        if (strcmp(argv[5], "-") != 0) {
            g_both = argv[5];
        }
        if (argc >= 7 && strcmp(argv[6], "-") != 0) {
            g_cert = argv[6];
        }
        return strcmp(argv[2], "raw") == 0 ? serve_raw(argv[3], argv[4]) : serve_troupe(argv[3]);
    }
    const char *transport = "ipc";
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--transport") == 0) {
            transport = argv[i + 1];
            // bench_parse does not know this flag: take it out.
            for (int k = i; k + 2 <= argc; k++) {
                argv[k] = argv[k + 2];
            }
            argc -= 2;
            break;
        }
    }
    o_tcp = strcmp(transport, "tcp") == 0;
    o_tls = strcmp(transport, "tls") == 0;
    if (!o_tcp && !o_tls && strcmp(transport, "ipc") != 0) {
        fprintf(stderr, "bench_remote_ping_pong: --transport ipc|tcp|tls\n");
        return 2;
    }
    static const bench_opt opts[] = {
        {"--inflight", "requests in flight (0: 1, 16 and 128)", &o_inflight, NULL},
        {"--troupe-only", "run troupe's side alone (for profiling)", NULL, &o_troupe_only},
        {"--raw-only", "run raw nng's side alone (for profiling)", NULL, &o_raw_only},
    };
    static const bench_def def = {"remote_ping_pong", 20000, 2, opts, 3};
    bench_args a = bench_parse(argc, argv, &def);
    ssize_t len = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (len <= 0) {
        return 1;
    }
    g_self[len] = '\0';
    if (o_tls && !make_cert()) {
        fprintf(stderr, "bench_remote_ping_pong: --transport tls needs openssl\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uint64_t ks[3] = {1, 16, 128};
    size_t nk = 3;
    if (o_inflight != 0) {
        ks[0] = o_inflight;
        nk = 1;
    }
    bool all_ok = true;
    for (size_t i = 0; i < nk; i++) {
        uint64_t k = ks[i];
        uint64_t n = a.n - a.n % k;
        // Best of --runs (default 5 is long: two runs per point unless asked).
        unsigned runs = a.runs == 5 ? 2 : a.runs;
        point t = {0}, r = {0};
        for (unsigned run = 0; run < runs; run++) {
            point pt = o_raw_only ? (point){0} : run_troupe(&a, n, k);
            point pr = o_troupe_only ? (point){0} : run_raw(n, k);
            if (o_raw_only) {
                pt = pr;
            } else if (o_troupe_only) {
                pr = pt;
            }
            if (pt.rps > t.rps) {
                t = pt;
            }
            if (pr.rps > r.rps) {
                r = pr;
            }
            all_ok = all_ok && pt.ok && pr.ok;
        }
        emit(&a, transport, k, "round_trips", t.rps, "round_trips/s", t.ok);
        emit(&a, transport, k, "raw_nng_round_trips", r.rps, "round_trips/s", r.ok);
        emit(&a, transport, k, "vs_raw", r.rps > 0 ? t.rps / r.rps : 0, "ratio", t.ok && r.ok);
        emit(&a, transport, k, "envelopes_per_frame", t.per_frame, "envelopes", t.ok);
        emit(&a, transport, k, "p50", t.p50_us, "us", t.ok);
        emit(&a, transport, k, "p99", t.p99_us, "us", t.ok);
        emit(&a, transport, k, "raw_p50", r.p50_us, "us", r.ok);
        emit(&a, transport, k, "raw_p99", r.p99_us, "us", r.ok);
    }
    if (o_tls) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_tlsdir);
        (void)!system(cmd);
    }
    nng_fini();
    return all_ok ? 0 : 1;
}

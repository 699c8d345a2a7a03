// bench_tcp_echo_load: a closed-loop TCP load generator for an echo server
// that runs in another process (issue #4: troupe's echo server against
// libuv's, the server pinned to one core and this load to the other; see
// run_tcp_echo.sh). It does not use the troupe runtime: plain sockets and
// epoll, one thread by default (--threads N splits the connections).
//
// Each of --conns connections sends a --size byte message, waits for the
// whole echo, checks it byte for byte against what it sent, records the
// round trip, and sends the next one at once. The first --warmup seconds
// are not recorded; then --seconds of measurement; then no new messages are
// sent and the ones in flight are drained (at most 2 s) before the sockets
// are closed. A message counts if its echo completed inside the measured
// window.
//
// Latencies go into a log-linear histogram (exact below 128 ns, then 64
// buckets per power of two: at most 1.6 % error, fixed memory), never a list
// of samples.
//
// Output: JSON lines as README's benchmark contract asks, with "bench"
// "tcp_echo", and an extra field "server" with --label. "sched" and
// "workers" only label what the server was started with (--sched, --workers:
// this program cannot see them). Headline msgs_per_s (msgs/s), then
// latency_p50, latency_p99, latency_p999, latency_mean and latency_max (us),
// then msgs, errors and mismatches (count). Self-check (ok, exit status):
// every connection connected, no connection error, every echo matched, no
// message lost in the drain, at least one message measured. Exit 0 when it
// passed, 1 when it failed, 2 for bad arguments.
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE ((size_t)1 << 20)
#define MAX_CONNS 65536u
#define MAX_THREADS 64u
#define CONNECT_TIMEOUT_MS 5000
#define DRAIN_NS ((uint64_t)2000000000)

// ---------------------------------------------------------------------------
// Options.

typedef struct opts {
    const char *host;
    const char *port;
    const char *label;
    const char *sched;
    unsigned workers;
    unsigned conns;
    size_t size;
    double seconds;
    double warmup;
    unsigned threads;
} opts;

static void
usage(void)
{
    fprintf(stderr,
            "usage: bench_tcp_echo_load --port P [--host 127.0.0.1] [--conns 64] [--size 64]\n"
            "       [--seconds 10] [--warmup 1] [--threads 1] [--label NAME]\n"
            "       [--sched NAME] [--workers N]\n"
            "  --host     server address (default 127.0.0.1)\n"
            "  --port     server port (required)\n"
            "  --conns    connections, each one message in flight (default 64)\n"
            "  --size     bytes per message (default 64, at most %zu)\n"
            "  --seconds  measured seconds (default 10)\n"
            "  --warmup   seconds before measuring (default 1)\n"
            "  --threads  load threads, connections split among them (default 1)\n"
            "  --label    the server, e.g. troupe-ws-1 or libuv (JSON field \"server\")\n"
            "  --sched    the server's scheduler, a label only (default ws)\n"
            "  --workers  the server's workers, a label only (default 1)\n",
            MAX_SIZE);
}

static unsigned long long
parse_num(const char *flag, const char *s, unsigned long long lo, unsigned long long hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "bench_tcp_echo_load: %s wants a whole number in %llu..%llu: %s\n", flag,
                lo, hi, s);
        usage();
        exit(2);
    }
    return v;
}

static double
parse_secs(const char *flag, const char *s, double lo)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo) || v > 86400) {
        fprintf(stderr, "bench_tcp_echo_load: %s wants seconds >= %g: %s\n", flag, lo, s);
        usage();
        exit(2);
    }
    return v;
}

static opts
parse_args(int argc, char **argv)
{
    opts o = {.host = "127.0.0.1",
              .port = NULL,
              .label = "unknown",
              .sched = "ws",
              .workers = 1,
              .conns = 64,
              .size = 64,
              .seconds = 10,
              .warmup = 1,
              .threads = 1};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            usage();
            exit(0);
        }
        if (i + 1 >= argc) {
            usage();
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(f, "--host") == 0) {
            o.host = v;
        } else if (strcmp(f, "--port") == 0) {
            parse_num(f, v, 1, 65535);
            o.port = v;
        } else if (strcmp(f, "--label") == 0) {
            o.label = v;
        } else if (strcmp(f, "--sched") == 0) {
            o.sched = v;
        } else if (strcmp(f, "--workers") == 0) {
            o.workers = (unsigned)parse_num(f, v, 0, 1024);
        } else if (strcmp(f, "--conns") == 0) {
            o.conns = (unsigned)parse_num(f, v, 1, MAX_CONNS);
        } else if (strcmp(f, "--size") == 0) {
            o.size = (size_t)parse_num(f, v, 1, MAX_SIZE);
        } else if (strcmp(f, "--seconds") == 0) {
            o.seconds = parse_secs(f, v, 0.001);
        } else if (strcmp(f, "--warmup") == 0) {
            o.warmup = parse_secs(f, v, 0);
        } else if (strcmp(f, "--threads") == 0) {
            o.threads = (unsigned)parse_num(f, v, 1, MAX_THREADS);
        } else {
            usage();
            exit(2);
        }
    }
    if (o.port == NULL) {
        fprintf(stderr, "bench_tcp_echo_load: --port is required\n");
        usage();
        exit(2);
    }
    if (o.threads > o.conns) {
        o.threads = o.conns;
    }
    return o;
}

// ---------------------------------------------------------------------------
// Time.

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// ---------------------------------------------------------------------------
// A log-linear histogram of nanoseconds: values below 2^SUB_BITS exactly,
// above that 2^(SUB_BITS-1) buckets per power of two.

#define SUB_BITS 7
#define SUB_HALF (1u << (SUB_BITS - 1))
#define HIST_BUCKETS ((1u << SUB_BITS) + (64u - SUB_BITS) * SUB_HALF)

typedef struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t n;
    uint64_t sum;
    uint64_t max;
} hist;

static unsigned
hist_index(uint64_t v)
{
    if (v < (1u << SUB_BITS)) {
        return (unsigned)v;
    }
    unsigned h = 63u - (unsigned)__builtin_clzll(v); // >= SUB_BITS
    unsigned shift = h - (SUB_BITS - 1);             // v >> shift in [SUB_HALF, 2*SUB_HALF)
    return (1u << SUB_BITS) + (h - SUB_BITS) * SUB_HALF + (unsigned)((v >> shift) - SUB_HALF);
}

// hist_value returns the middle of bucket i's range.
static double
hist_value(unsigned i)
{
    if (i < (1u << SUB_BITS)) {
        return (double)i;
    }
    unsigned k = i - (1u << SUB_BITS);
    unsigned h = k / SUB_HALF + SUB_BITS;
    unsigned shift = h - (SUB_BITS - 1);
    double lo = (double)((uint64_t)(k % SUB_HALF + SUB_HALF) << shift);
    return lo + (double)((uint64_t)1 << shift) / 2;
}

static void
hist_add(hist *hg, uint64_t v)
{
    hg->count[hist_index(v)]++;
    hg->n++;
    hg->sum += v;
    if (v > hg->max) {
        hg->max = v;
    }
}

static void
hist_merge(hist *into, const hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        into->count[i] += from->count[i];
    }
    into->n += from->n;
    into->sum += from->sum;
    if (from->max > into->max) {
        into->max = from->max;
    }
}

// hist_quantile returns the value at quantile q (0 < q <= 1), in ns.
static double
hist_quantile(const hist *hg, double q)
{
    if (hg->n == 0) {
        return 0;
    }
    uint64_t rank = (uint64_t)(q * (double)hg->n);
    if ((double)rank < q * (double)hg->n) {
        rank++;
    }
    if (rank == 0) {
        rank = 1;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hg->count[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return v > (double)hg->max ? (double)hg->max : v;
        }
    }
    return (double)hg->max;
}

// ---------------------------------------------------------------------------
// Connections and the load threads.

typedef struct conn {
    int fd;
    uint32_t id;
    bool busy;     // a message is in flight
    bool want_out; // EPOLLOUT is registered (a write was short)
    bool dead;
    size_t sent, got; // bytes of the message in flight written / echoed
    uint64_t seq;
    uint64_t t_send;
    unsigned char *tx, *rx;
} conn;

typedef struct loader {
    pthread_t th;
    const opts *o;
    conn *conns;
    unsigned nconns;
    int ep;
    uint64_t t_measure, t_end; // the measured window, CLOCK_MONOTONIC ns
    hist hg;                   // round trips completed inside the window
    uint64_t errors;           // connection errors (incl. messages lost in the drain)
    uint64_t mismatches;       // echoes that differed from what was sent
    uint64_t total;            // echoes completed, window or not
} loader;

static uint64_t
mix64(uint64_t x)
{
    // splitmix64's finalizer.
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// fill writes the content of message seq of connection id: a pseudo-random
// pattern, different for every message, so a stale or misrouted echo shows.
static void
fill(unsigned char *p, size_t size, uint32_t id, uint64_t seq)
{
    uint64_t x = ((uint64_t)id << 40) ^ seq;
    for (size_t off = 0; off < size; off += 8) {
        x = mix64(x);
        size_t k = size - off < 8 ? size - off : 8;
        memcpy(p + off, &x, k);
    }
}

static void
conn_fail(loader *l, conn *c, const char *what, int err)
{
    if (c->dead) {
        return;
    }
    fprintf(stderr, "bench_tcp_echo_load: connection %u: %s: %s\n", c->id, what,
            err != 0 ? strerror(err) : "end of stream");
    l->errors++;
    c->dead = true;
    c->busy = false;
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void
set_out(loader *l, conn *c, bool on)
{
    if (c->want_out == on) {
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        conn_fail(l, c, "epoll_ctl", errno);
        return;
    }
    c->want_out = on;
}

// write_more writes what is left of the message in flight.
static void
write_more(loader *l, conn *c)
{
    size_t size = l->o->size;
    while (c->sent < size) {
        ssize_t n = send(c->fd, c->tx + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(l, c, true);
            return;
        } else {
            conn_fail(l, c, "send", n < 0 ? errno : EPIPE);
            return;
        }
    }
    set_out(l, c, false);
}

static void
start_msg(loader *l, conn *c, uint64_t t)
{
    c->seq++;
    fill(c->tx, l->o->size, c->id, c->seq);
    c->sent = 0;
    c->got = 0;
    c->busy = true;
    c->t_send = t;
    write_more(l, c);
}

// read_more reads the echo; when it is whole it checks and records it and,
// unless the run is stopping, sends the next message.
static void
read_more(loader *l, conn *c, bool stopping)
{
    size_t size = l->o->size;
    for (;;) {
        if (!c->busy) {
            // Bytes nobody asked for: the server sent more than it was sent.
            unsigned char b;
            ssize_t n = recv(c->fd, &b, 1, MSG_DONTWAIT);
            if (n > 0) {
                l->mismatches++;
                conn_fail(l, c, "unexpected bytes from the server", EPROTO);
            } else if (n == 0) {
                conn_fail(l, c, "recv", 0);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_fail(l, c, "recv", errno);
            }
            return;
        }
        ssize_t n = recv(c->fd, c->rx + c->got, size - c->got, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            conn_fail(l, c, "recv", n < 0 ? errno : 0);
            return;
        }
        c->got += (size_t)n;
        if (c->got < size) {
            return; // level-triggered: the rest comes with a later event
        }
        if (c->sent < size) {
            // The echo ran ahead of what was written.
            l->mismatches++;
            conn_fail(l, c, "echo longer than the message sent", EPROTO);
            return;
        }
        uint64_t t = now_ns();
        c->busy = false;
        l->total++;
        if (memcmp(c->rx, c->tx, size) != 0) {
            l->mismatches++;
            conn_fail(l, c, "echo differs from the message sent", EPROTO);
            return;
        }
        if (t >= l->t_measure && t < l->t_end) {
            hist_add(&l->hg, t - c->t_send);
        }
        if (!stopping) {
            start_msg(l, c, t);
        }
        return;
    }
}

static void *
loader_main(void *arg)
{
    loader *l = arg;
    struct epoll_event evs[256];
    uint64_t t = now_ns();
    for (unsigned i = 0; i < l->nconns; i++) {
        start_msg(l, &l->conns[i], t);
    }
    bool stopping = false;
    uint64_t drain_end = l->t_end + DRAIN_NS;
    for (;;) {
        t = now_ns();
        if (!stopping && t >= l->t_end) {
            stopping = true;
        }
        if (stopping) {
            unsigned busy = 0;
            for (unsigned i = 0; i < l->nconns; i++) {
                busy += l->conns[i].busy && !l->conns[i].dead;
            }
            if (busy == 0) {
                break;
            }
            if (t >= drain_end) {
                for (unsigned i = 0; i < l->nconns; i++) {
                    conn *c = &l->conns[i];
                    if (c->busy && !c->dead) {
                        conn_fail(l, c, "no echo within 2 s of the end", ETIMEDOUT);
                    }
                }
                break;
            }
        }
        uint64_t until = stopping ? drain_end : l->t_end;
        int timeout_ms = (int)((until - t + 999999) / 1000000);
        int n = epoll_wait(l->ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout_ms);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("bench_tcp_echo_load: epoll_wait");
            l->errors++;
            break;
        }
        for (int k = 0; k < n; k++) {
            conn *c = evs[k].data.ptr;
            if (c->dead) {
                continue;
            }
            if ((evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->busy &&
                c->sent < l->o->size) {
                write_more(l, c);
            }
            if (!c->dead && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                read_more(l, c, stopping);
            }
        }
    }
    return NULL;
}

// ---------------------------------------------------------------------------
// Setup.

// connect_all opens o->conns nonblocking connections and waits (bounded) for
// all of them; false, with the reason printed, if one failed.
static bool
connect_all(const opts *o, conn *conns)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai;
    int rv = getaddrinfo(o->host, o->port, &hints, &ai);
    if (rv != 0) {
        fprintf(stderr, "bench_tcp_echo_load: %s port %s: %s\n", o->host, o->port,
                gai_strerror(rv));
        return false;
    }
    struct pollfd *pf = calloc(o->conns, sizeof *pf);
    bool ok = pf != NULL;
    for (unsigned i = 0; ok && i < o->conns; i++) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            perror("bench_tcp_echo_load: socket");
            ok = false;
            break;
        }
        conns[i].fd = fd;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            fprintf(stderr, "bench_tcp_echo_load: connect %s port %s: %s\n", o->host, o->port,
                    strerror(errno));
            ok = false;
            break;
        }
        pf[i].fd = fd;
        pf[i].events = POLLOUT;
    }
    freeaddrinfo(ai);
    // Wait until every connection is established (or failed), within the
    // bound.
    uint64_t deadline = now_ns() + (uint64_t)CONNECT_TIMEOUT_MS * 1000000u;
    unsigned pending = ok ? o->conns : 0;
    while (ok && pending > 0) {
        uint64_t t = now_ns();
        if (t >= deadline) {
            fprintf(stderr, "bench_tcp_echo_load: %u connections not established in %d ms\n",
                    pending, CONNECT_TIMEOUT_MS);
            ok = false;
            break;
        }
        int n = poll(pf, o->conns, (int)((deadline - t + 999999) / 1000000));
        if (n < 0 && errno != EINTR) {
            perror("bench_tcp_echo_load: poll");
            ok = false;
            break;
        }
        for (unsigned i = 0; n > 0 && i < o->conns; i++) {
            if (pf[i].fd < 0 || pf[i].revents == 0) {
                continue;
            }
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(pf[i].fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
                err = errno;
            }
            if (err != 0) {
                fprintf(stderr, "bench_tcp_echo_load: connect %s port %s: %s\n", o->host, o->port,
                        strerror(err));
                ok = false;
                break;
            }
            pf[i].fd = -1; // poll ignores it from now on
            pending--;
        }
    }
    free(pf);
    return ok;
}

static void
line(const opts *o, const char *metric, double value, const char *unit, bool ok)
{
    // The label is the user's: keep the JSON valid whatever it holds.
    char label[128];
    size_t k = 0;
    for (const char *p = o->label; *p != '\0' && k < sizeof label - 1; p++) {
        unsigned char ch = (unsigned char)*p;
        label[k++] = (ch < 0x20 || ch == '"' || ch == '\\') ? '_' : (char)ch;
    }
    label[k] = '\0';
    char sched[64];
    k = 0;
    for (const char *p = o->sched; *p != '\0' && k < sizeof sched - 1; p++) {
        unsigned char ch = (unsigned char)*p;
        sched[k++] = (ch < 0x20 || ch == '"' || ch == '\\') ? '_' : (char)ch;
    }
    sched[k] = '\0';
    printf("{\"bench\":\"tcp_echo\",\"sched\":\"%s\",\"workers\":%u,\"server\":\"%s\","
           "\"metric\":\"%s\",\"value\":%.10g,\"unit\":\"%s\",\"ok\":%s}\n",
           sched, o->workers, label, metric, value, unit, ok ? "true" : "false");
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    opts o = parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);

    conn *conns = calloc(o.conns, sizeof *conns);
    unsigned char *bufs = calloc(o.conns, 2 * o.size);
    loader *ls = calloc(o.threads, sizeof *ls);
    if (conns == NULL || bufs == NULL || ls == NULL) {
        fprintf(stderr, "bench_tcp_echo_load: out of memory\n");
        return 1;
    }
    for (unsigned i = 0; i < o.conns; i++) {
        conns[i].fd = -1;
        conns[i].id = i;
        conns[i].tx = bufs + (size_t)i * 2 * o.size;
        conns[i].rx = conns[i].tx + o.size;
    }
    for (unsigned j = 0; j < o.threads; j++) {
        ls[j].ep = -1;
    }
    bool ok = connect_all(&o, conns);
    uint64_t errors = ok ? 0 : 1; // a failed connect is a connection error
    uint64_t t_measure = 0, t_end = 0;
    unsigned started = 0;
    if (ok) {
        // Thread j gets a contiguous run of the connections.
        uint64_t t0 = now_ns();
        t_measure = t0 + (uint64_t)(o.warmup * 1e9);
        t_end = t_measure + (uint64_t)(o.seconds * 1e9);
        unsigned per = o.conns / o.threads, extra = o.conns % o.threads, next = 0;
        for (unsigned j = 0; j < o.threads; j++) {
            loader *l = &ls[j];
            l->o = &o;
            l->conns = conns + next;
            l->nconns = per + (j < extra ? 1 : 0);
            next += l->nconns;
            l->t_measure = t_measure;
            l->t_end = t_end;
            l->ep = epoll_create1(EPOLL_CLOEXEC);
            if (l->ep < 0) {
                perror("bench_tcp_echo_load: epoll_create1");
                ok = false;
                break;
            }
            for (unsigned i = 0; i < l->nconns; i++) {
                conn *c = &l->conns[i];
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
                    perror("bench_tcp_echo_load: epoll_ctl");
                    ok = false;
                    break;
                }
            }
            if (!ok) {
                break;
            }
        }
        for (unsigned j = 0; ok && j < o.threads; j++) {
            if (pthread_create(&ls[j].th, NULL, loader_main, &ls[j]) != 0) {
                fprintf(stderr, "bench_tcp_echo_load: cannot start a load thread\n");
                ok = false;
                break;
            }
            started++;
        }
    }
    hist *all = calloc(1, sizeof *all);
    if (all == NULL) {
        fprintf(stderr, "bench_tcp_echo_load: out of memory\n");
        return 1;
    }
    uint64_t mismatches = 0, total = 0;
    for (unsigned j = 0; j < started; j++) {
        pthread_join(ls[j].th, NULL);
        hist_merge(all, &ls[j].hg);
        errors += ls[j].errors;
        mismatches += ls[j].mismatches;
        total += ls[j].total;
    }
    for (unsigned j = 0; j < o.threads; j++) {
        if (ls[j].ep >= 0) {
            close(ls[j].ep);
        }
    }
    for (unsigned i = 0; i < o.conns; i++) {
        if (conns[i].fd >= 0) {
            close(conns[i].fd);
        }
    }
    ok = ok && errors == 0 && mismatches == 0 && all->n > 0;
    if (!ok) {
        fprintf(stderr,
                "bench_tcp_echo_load: self-check failed: %llu errors, %llu mismatched echoes, "
                "%llu messages measured (%llu in all)\n",
                (unsigned long long)errors, (unsigned long long)mismatches,
                (unsigned long long)all->n, (unsigned long long)total);
    }
    double secs = (double)(t_end - t_measure) * 1e-9;
    line(&o, "msgs_per_s", secs > 0 ? (double)all->n / secs : 0, "msgs/s", ok);
    line(&o, "latency_p50", hist_quantile(all, 0.50) * 1e-3, "us", ok);
    line(&o, "latency_p99", hist_quantile(all, 0.99) * 1e-3, "us", ok);
    line(&o, "latency_p999", hist_quantile(all, 0.999) * 1e-3, "us", ok);
    line(&o, "latency_mean", all->n > 0 ? (double)all->sum / (double)all->n * 1e-3 : 0, "us", ok);
    line(&o, "latency_max", (double)all->max * 1e-3, "us", ok);
    line(&o, "msgs", (double)all->n, "count", ok);
    line(&o, "errors", (double)errors, "count", ok);
    line(&o, "mismatches", (double)mismatches, "count", ok);
    free(all);
    free(ls);
    free(bufs);
    free(conns);
    return ok ? 0 : 1;
}

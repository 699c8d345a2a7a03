// echo_server: a TCP echo server on libtroupe, the server side of the
// tcp_echo benchmark (tests/bench/run_tcp_echo.sh). One task accepts; one
// task per connection reads and writes back what it read. Serves until
// SIGTERM or SIGINT, then shuts the runtime down (every connection task is
// cancelled and its drop closes its socket) and exits 0.
//
//   echo_server [--port 7878] [--workers N] [--sched ws|rr|hybrid] [--host 0.0.0.0]
//
// Signals: they are blocked in every thread (the runtime's workers inherit
// the mask from main) and one plain thread takes them with sigwait.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <troupe/troupe.h>

// A connection: read what comes, write it back, until EOF or an error.
typedef struct conn {
    int tr_pc;
    tr_io *io;
    size_t n;
    tr_io_op wr;
    tr_err err;
    char buf[4096];
} conn;

static tr_poll
conn_poll(void *arg, tr_cx *cx)
{
    conn *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n, &st->err));
        if (st->err != TR_OK || st->n == 0) {
            break; // an error (a reset peer), or EOF: the connection ends
        }
        TR_AWAIT(st, tr_write_all(st->io, cx, &st->wr, st->buf, st->n, NULL, &st->err));
        if (st->err != TR_OK) {
            break;
        }
    }
    TR_END(st);
}

static void
conn_drop(void *arg)
{
    conn *st = arg;
    tr_io_close(st->io); // after EOF, or when cancelled at shutdown
}

static const tr_task_spec conn_spec = {
    .name = "echo_conn", .poll = conn_poll, .drop = conn_drop, .size = sizeof(conn)};

// conn_init moves the accepted socket (*arg, a tr_io **) into a new
// connection's state, which tr_spawn has zeroed: an init function rather
// than a copy of a whole conn, whose buffer is 4 KiB. It empties *arg, so
// that after a failed spawn the caller knows whether it still owns the
// socket.
static void
conn_init(void *state, void *arg)
{
    conn *st = state;
    tr_io **io = arg;
    st->io = *io;
    *io = NULL;
}

// The acceptor: every connection becomes a detached task.
typedef struct acceptor {
    int tr_pc;
    tr_io *lis;
    tr_io *c;
    tr_err err;
    uint64_t accepted;
} acceptor;

static tr_poll
acceptor_poll(void *arg, tr_cx *cx)
{
    acceptor *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_accept(st->lis, cx, &st->c, NULL, NULL, &st->err));
        if (st->err != TR_OK) {
            if (st->err == TR_EMFILE || st->err == TR_ENOMEM) {
                // Out of descriptors: refuse nothing, just try again later.
                fprintf(stderr, "echo_server: accept: %s\n", tr_strerror(st->err));
                TR_YIELD(st, cx);
                continue;
            }
            break;
        }
        tr_tcp_set_nodelay(st->c, true); // small echoes go out at once
        if (tr_spawn(tr_cx_rt(cx), &conn_spec, conn_init, &st->c, NULL) == TR_OK) {
            st->accepted++; // detached: it frees itself when it ends
        } else if (st->c != NULL) {
            tr_io_close(st->c); // shutting down, or the pool is full
        }
    }
    TR_END(st);
}

static void
acceptor_drop(void *arg)
{
    acceptor *st = arg;
    tr_io_close(st->lis);
}

static const tr_task_spec acceptor_spec = {
    .name = "echo_accept", .poll = acceptor_poll, .drop = acceptor_drop, .size = sizeof(acceptor)};

static void *
signal_thread(void *arg)
{
    tr_rt *rt = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    sigwait(&set, &sig);
    tr_rt_shutdown(rt, TR_SHUTDOWN_IMMEDIATE, 0);
    return NULL;
}

static int
usage(void)
{
    fprintf(stderr, "usage: echo_server [--port P] [--workers N] [--sched ws|rr|hybrid] "
                    "[--host ADDR]\n");
    return 2;
}

int
main(int argc, char **argv)
{
    int port = 7878;
    const char *host = "0.0.0.0";
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            return usage();
        }
        if (strcmp(argv[i], "--port") == 0) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--workers") == 0) {
            cfg.workers = (unsigned)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--host") == 0) {
            host = argv[++i];
        } else if (strcmp(argv[i], "--sched") == 0) {
            if (tr_sched_parse(argv[++i], &cfg.sched) != TR_OK) {
                fprintf(stderr, "echo_server: %s\n", tr_error_detail());
                return usage();
            }
        } else {
            return usage();
        }
    }

    // Block the signals before any thread exists, so every thread inherits
    // the mask and only signal_thread takes them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    char text[300];
    tr_addr addr;
    snprintf(text, sizeof text, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    if (tr_addr_parse(text, &addr) != TR_OK) {
        fprintf(stderr, "echo_server: bad address %s\n", text);
        return 2;
    }

    tr_rt *rt;
    tr_err rv = tr_rt_new(&cfg, &rt);
    if (rv != TR_OK) {
        fprintf(stderr, "echo_server: tr_rt_new: %s: %s\n", tr_strerror(rv), tr_error_detail());
        return 1;
    }
    tr_io *lis;
    if ((rv = tr_tcp_listen(rt, &addr, 1024, &lis)) != TR_OK) {
        fprintf(stderr, "echo_server: listen on %s: %s\n", text, tr_strerror(rv));
        tr_rt_free(rt);
        return 1;
    }
    pthread_t sig;
    pthread_create(&sig, NULL, signal_thread, rt);
    fprintf(stderr, "echo_server: listening on %s (%s, %u workers)\n", text,
            tr_sched_name(cfg.sched), cfg.workers);
    // The acceptor's state is a copy of the literal; it owns the listener
    // from here (its drop closes it). Returns at the shutdown.
    tr_outcome out;
    rv = tr_rt_run(rt, &acceptor_spec, NULL, &(acceptor){.lis = lis}, &out);
    pthread_join(sig, NULL);
    for (unsigned i = 0; i < cfg.workers; i++) {
        tr_worker_stats ws;
        if (tr_rt_worker_stats(rt, i, &ws) == TR_OK) {
            fprintf(stderr,
                    "echo_server: worker %u: polls=%llu parks=%llu steals=%llu lifo=%llu "
                    "injector=%llu\n",
                    i, (unsigned long long)ws.polls, (unsigned long long)ws.parks,
                    (unsigned long long)ws.steals, (unsigned long long)ws.lifo_hits,
                    (unsigned long long)ws.injector_pops);
        }
    }
    tr_rt_free(rt);
    if (rv != TR_OK && rv != TR_ESHUTDOWN) {
        fprintf(stderr, "echo_server: %s\n", tr_strerror(rv));
        return 1;
    }
    fprintf(stderr, "echo_server: stopped\n");
    return 0;
}

// bench_ping_pong: two tasks bounce a counter through two bounded channels
// of capacity 1. Ping sends i on channel A and awaits the echo on channel B;
// pong receives on A and sends what it got back on B; N round trips
// (default 1,000,000). Measures the latency of a channel send, the wake of
// the task waiting on the other side and its poll: with one worker that is
// a local wake; with more it depends on where the scheduler keeps the two
// tasks (on one worker, a wake is a queue push; on two, each round trip
// crosses threads twice and may unpark a sleeping worker).
//
// The root task spawns both in the ordinary way and the scheduler places
// them, as tokio and Go do (default --workers 2 --sched ws). --apart is the
// variant "kept on different workers": there is no pinning API, so it uses
// the round-robin scheduler, which deals new tasks to workers in turn (ping
// and pong, spawned one after the other, land on different workers) and
// keeps a woken task on the worker that last ran it. --apart forces
// --sched rr and ignores the TROUPE_* environment (the variant is defined by
// rr's placement), and its headline is named "round_trips_apart".
//
// Headline: round_trips/s (median of --runs); then wall (ms) and peak_rss
// (B), and the runtime's steals and parks of the last run. Self-check: ping
// completed N round trips and the last value it received was N; pong echoed
// N values.
#include <string.h>

#include <troupe/troupe.h>

#include "bench.h"

// Ping owns A's sender end and B's receiver end.
typedef struct ping {
    int tr_pc;
    tr_chan *a, *b;
    uint64_t n, i;
    uint64_t got;       // the echo just received
    uint64_t trips;     // round trips whose echo matched
    tr_chan_send_op op; // a send waiting for room keeps its place here
    tr_err err;
} ping;

static tr_poll
ping_poll(void *arg, tr_cx *cx)
{
    ping *st = arg;
    TR_BEGIN(st);
    for (st->i = 1; st->i <= st->n; st->i++) {
        TR_AWAIT(st, tr_chan_send(st->a, cx, &st->op, &st->i, &st->err));
        if (st->err != TR_OK) {
            break; // pong went away: the check fails on the count
        }
        TR_AWAIT(st, tr_chan_recv(st->b, cx, &st->got, &st->err));
        if (st->err != TR_OK || st->got != st->i) {
            break;
        }
        st->trips++;
    }
    // The result: the round trips done and the last value received.
    tr_value v;
    memcpy(&v.bytes[0], &st->trips, sizeof(uint64_t));
    memcpy(&v.bytes[8], &st->got, sizeof(uint64_t));
    tr_cx_set_result(cx, v);
    TR_END(st);
}

static void
ping_drop(void *arg)
{
    ping *st = arg;
    // Runs once however ping ends; releasing A's sender ends pong's loop.
    tr_chan_send_abandon(st->a, &st->op);
    tr_chan_sender_release(st->a);
    tr_chan_receiver_release(st->b);
}

static const tr_task_spec ping_spec = {
    .name = "ping", .poll = ping_poll, .drop = ping_drop, .size = sizeof(ping)};

// Pong owns A's receiver end and B's sender end.
typedef struct pong {
    int tr_pc;
    tr_chan *a, *b;
    uint64_t val;
    uint64_t echoed;
    tr_chan_send_op op;
    tr_err err;
} pong;

static tr_poll
pong_poll(void *arg, tr_cx *cx)
{
    pong *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_chan_recv(st->a, cx, &st->val, &st->err));
        if (st->err != TR_OK) {
            break; // ping released A: done
        }
        TR_AWAIT(st, tr_chan_send(st->b, cx, &st->op, &st->val, &st->err));
        if (st->err != TR_OK) {
            break;
        }
        st->echoed++;
    }
    tr_cx_set_result_u64(cx, st->echoed);
    TR_END(st);
}

static void
pong_drop(void *arg)
{
    pong *st = arg;
    tr_chan_send_abandon(st->b, &st->op);
    tr_chan_sender_release(st->b);
    tr_chan_receiver_release(st->a);
}

static const tr_task_spec pong_spec = {
    .name = "pong", .poll = pong_poll, .drop = pong_drop, .size = sizeof(pong)};

// What the root hands back to main (the root's own result is only 16 bytes).
typedef struct tally {
    uint64_t trips, last, echoed;
    bool joined; // both joins completed with TR_OK
} tally;

typedef struct root {
    int tr_pc;
    uint64_t n;
    tally *t;
    tr_join jping, jpong;
    tr_outcome oping, opong;
} root;

// The channel ends not yet handed to a task. Each channel was created
// with one sender reference and its receiver; ping_init and pong_init move
// the ends their task uses out of here, so that after a failed spawn the
// root releases exactly the ends nobody took.
typedef struct ends {
    tr_chan *a_tx, *a_rx, *b_tx, *b_rx;
    uint64_t n;
} ends;

static void
ping_init(void *state, void *arg)
{
    ping *st = state;
    ends *e = arg;
    st->a = e->a_tx;
    st->b = e->b_rx;
    st->n = e->n;
    e->a_tx = e->b_rx = NULL;
}

static void
pong_init(void *state, void *arg)
{
    pong *st = state;
    ends *e = arg;
    st->a = e->a_rx;
    st->b = e->b_tx;
    e->a_rx = e->b_tx = NULL;
}

// start_pair creates the channels and starts ping and pong; false when
// something could not be made (then every end nobody took is released, so
// a ping or pong that did start sees its peer gone and ends).
static bool
start_pair(root *st, tr_cx *cx)
{
    tr_chan *a = NULL, *b = NULL;
    bool ok = tr_chan_new(sizeof(uint64_t), 1, &a) == TR_OK &&
              tr_chan_new(sizeof(uint64_t), 1, &b) == TR_OK;
    ends e = {.a_tx = a, .a_rx = a, .b_tx = b, .b_rx = b, .n = st->n};
    // Ping first: round robin deals ping and pong to workers in turn.
    ok = ok && tr_spawn(tr_cx_rt(cx), &ping_spec, ping_init, &e, &st->jping) == TR_OK &&
         tr_spawn(tr_cx_rt(cx), &pong_spec, pong_init, &e, &st->jpong) == TR_OK;
    if (e.a_tx != NULL) {
        tr_chan_sender_release(e.a_tx);
    }
    if (e.a_rx != NULL) {
        tr_chan_receiver_release(e.a_rx);
    }
    if (e.b_tx != NULL) {
        tr_chan_sender_release(e.b_tx);
    }
    if (e.b_rx != NULL) {
        tr_chan_receiver_release(e.b_rx);
    }
    if (!ok) {
        tr_join_release(&st->jping); // a no-op when ping did not start
    }
    return ok;
}

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!start_pair(st, cx)) {
        TR_RETURN(st); // the tally stays zero: the check fails
    }
    TR_AWAIT(st, tr_join_poll(&st->jping, cx, &st->oping));
    TR_AWAIT(st, tr_join_poll(&st->jpong, cx, &st->opong));
    st->t->joined = st->oping.err == TR_OK && st->opong.err == TR_OK;
    memcpy(&st->t->trips, &st->oping.value.bytes[0], sizeof(uint64_t));
    memcpy(&st->t->last, &st->oping.value.bytes[8], sizeof(uint64_t));
    st->t->echoed = st->opong.value.u64;
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

int
main(int argc, char **argv)
{
    static bool apart;
    static const bench_opt opts[] = {
        {.flag = "--apart",
         .help = "keep ping and pong on different workers (forces --sched rr)",
         .on = &apart},
    };
    static const bench_def def = {
        .name = "ping_pong", .n = 1000000, .workers = 2, .opts = opts, .nopts = 1};
    bench_args a = bench_parse(argc, argv, &def);
    if (apart) {
        a.sched = TR_SCHED_RR;
        a.ignore_env = true;
    }
    double *secs = calloc(a.runs, sizeof(double));
    bool ok = true;
    tr_rt_stats stats = {0};
    for (unsigned r = 0; r < a.runs; r++) {
        tr_rt *rt = bench_rt_new(&a);
        tally t = {0};
        tr_err e;
        tr_outcome out = {0};
        secs[r] = bench_run(&a, rt, &root_spec, &(root){.n = a.n, .t = &t}, &e, &out);
        tr_rt_get_stats(rt, &stats);
        bool run_ok = e == TR_OK && t.joined && t.trips == a.n && t.last == a.n &&
                      t.echoed == a.n && stats.live_tasks == 0;
        if (!run_ok) {
            fprintf(stderr,
                    "bench_ping_pong: run %u: block_on %s, joined %d, trips %llu, last %llu, "
                    "echoed %llu, live %llu (want %llu)\n",
                    r, tr_strerror(e), t.joined, (unsigned long long)t.trips,
                    (unsigned long long)t.last, (unsigned long long)t.echoed,
                    (unsigned long long)stats.live_tasks, (unsigned long long)a.n);
        }
        ok = ok && run_ok;
        tr_rt_free(rt);
    }
    double med = bench_median(secs, a.runs);
    bench_line(&a, apart ? "round_trips_apart" : "round_trips", (double)a.n / med, "round_trips/s",
               ok);
    bench_line(&a, "wall", med * 1e3, "ms", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    bench_line(&a, "steals_last_run", (double)stats.steals, "count", ok);
    bench_line(&a, "parks_last_run", (double)stats.parks, "count", ok);
    free(secs);
    return ok ? 0 : 1;
}

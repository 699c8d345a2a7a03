// bench_actor_create: what making, using once and stopping an actor costs.
// The root task spawns N actors (default 1,000,000, --n), sends each one
// message (a Troupe__V1__Address whose actor field is the actor's index),
// and awaits a oneshot. Each actor, on its message, checks the index, counts
// it and stops; its stopped callback counts the stop in an atomic, and the
// one that brings the count to N sends on the oneshot. No sleeping or
// polling: the clock stops on that event.
//
// Time: total_time (the headline, in s) is from before the first spawn to
// the gate opening, i.e. spawn all, send all, see all stopped; spawn_time
// and send_stop_time are its two parts (the actors start handling their
// messages while the root is still sending).
//
// Memory: bytes_per_actor = (RSS with all N actors spawned and idle - RSS
// before the first spawn) / N, the resident set read from /proc/self/statm
// inside the root right after the last spawn (bench.h's bench_rss), before
// any message exists. "Idle" means waiting for its first message: some of
// the actors have had their first poll by then (another worker steals
// them), the rest are still queued; a first poll that finds the mailbox
// empty allocates nothing, so either way the figure holds what an idle actor
// costs, its run-queue entry included. The harness's own array (one 16-byte
// address per actor) is allocated and touched before the baseline, so it is
// not counted. slot_bytes_per_actor is the growth of the task pool's
// memory (tr_rt_stats.pool_bytes) over N: the pool slot alone.
//
// Self-check: N actors spawned, N messages sent, every actor received
// exactly one message and it carried its own index, N stops counted, and the
// run ended with TR_OK. One measurement per process (a second would reuse
// what the first freed), so --runs is ignored. Default --workers 2
// --sched ws.
#include <stdatomic.h>

#include <troupe/actor.h>
#include <troupe/troupe.h>

#include "bench.h"
#include "bench_actor.h"

// What the actors of the run share (one run per process).
static _Atomic uint64_t g_stopped;   // stopped callbacks that ran
static _Atomic uint64_t g_good;      // actors that got exactly their one message
static _Atomic uint64_t g_target;    // the count that opens the gate
static _Atomic(tr_oneshot *) g_gate; // sender end, taken by the last to stop

// 8 bytes of state: with the actor's own words, a 256-byte pool slot.
typedef struct oneshot_actor {
    uint32_t idx;
    uint16_t got;   // messages received
    uint16_t wrong; // messages that did not carry idx
} oneshot_actor;

static tr_err
once_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    ((oneshot_actor *)state)->idx = *(const uint32_t *)arg;
    return TR_OK;
}

static void
once_receive(tr_actor *self, void *state, tr_msg *m)
{
    oneshot_actor *st = state;
    const Troupe__V1__Address *b = bench_num_of(m);
    st->got++;
    if (b == NULL || b->actor != st->idx) {
        st->wrong++;
    }
    tr_actor_stop(self, TR_OK, NULL);
}

static void
once_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    oneshot_actor *st = state;
    if (reason == TR_OK && st->got == 1 && st->wrong == 0) {
        atomic_fetch_add_explicit(&g_good, 1, memory_order_relaxed);
    }
    // acq_rel: the last to stop sees the others' counts of g_good (each
    // added before its own stop was counted).
    uint64_t k = atomic_fetch_add_explicit(&g_stopped, 1, memory_order_acq_rel) + 1;
    if (k == atomic_load_explicit(&g_target, memory_order_acquire)) {
        tr_oneshot *g = atomic_exchange_explicit(&g_gate, NULL, memory_order_acq_rel);
        if (g != NULL) {
            (void)tr_oneshot_send(g, NULL);
        }
    }
}

static const tr_actor_spec once_spec = {.name = "once",
                                        .size = sizeof(oneshot_actor),
                                        .init = once_init,
                                        .receive = once_receive,
                                        .stopped = once_stopped};

// ---------------------------------------------------------------------------
// The root task.

typedef struct report {
    uint64_t rss0, rss1;   // before the first spawn, after the last
    uint64_t pool0, pool1; // the task pool's bytes, at the same points
    double t0, t_spawned, t_stopped;
    uint64_t spawned, sent;
    bool gate_ok;
} report;

typedef struct root {
    int tr_pc;
    uint64_t n, i;
    tr_actor_addr *addrs;
    tr_oneshot *gate; // receiver end
    tr_err err;
    report *rep;
} root;

// release_gate gives up the gate when fewer actors than planned run (those
// that do are waited for; none: nobody will send).
static void
release_gate(uint64_t running)
{
    atomic_store(&g_target, running);
    if (running == 0 || atomic_load(&g_stopped) == running) {
        tr_oneshot *g = atomic_exchange(&g_gate, NULL);
        if (g != NULL) {
            tr_oneshot_sender_release(g);
        }
    }
}

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    report *rep = st->rep;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    if (tr_oneshot_new(0, &st->gate) != TR_OK) {
        TR_RETURN(st);
    }
    atomic_store(&g_target, st->n);
    atomic_store(&g_gate, st->gate);
    rep->pool0 = bench_pool_bytes(rt);
    rep->rss0 = bench_rss();
    rep->t0 = bench_now();
    for (uint64_t i = 0; i < st->n; i++) {
        uint32_t idx = (uint32_t)i;
        if (tr_actor_spawn(rt, &once_spec, &idx, NULL, &st->addrs[i]) != TR_OK) {
            break;
        }
        rep->spawned++;
    }
    rep->t_spawned = bench_now();
    rep->rss1 = bench_rss();
    rep->pool1 = bench_pool_bytes(rt);
    if (rep->spawned < st->n) {
        fprintf(stderr, "bench_actor_create: spawned %llu actors of %llu\n",
                (unsigned long long)rep->spawned, (unsigned long long)st->n);
        // Stop what runs without a message: the gate opens for those.
        for (uint64_t i = 0; i < rep->spawned; i++) {
            (void)tr_actor_stop_other(st->addrs[i], TR_OK, NULL);
        }
        release_gate(rep->spawned);
    } else {
        for (uint64_t i = 0; i < st->n; i++) {
            tr_msg *m = bench_num_msg(0, i);
            if (tr_actor_send(NULL, st->addrs[i], m) != TR_OK) {
                tr_msg_free(m);
                (void)tr_actor_stop_other(st->addrs[i], TR_OK, NULL); // counted as not good
                continue;
            }
            rep->sent++;
        }
    }
    TR_AWAIT(st, tr_oneshot_recv(st->gate, cx, NULL, &st->err));
    rep->t_stopped = bench_now();
    rep->gate_ok = st->err == TR_OK;
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

int
main(int argc, char **argv)
{
    static const bench_def def = {.name = "actor_create", .n = 1000000, .workers = 2};
    bench_args a = bench_parse(argc, argv, &def);
    uint64_t n = a.n;
    if (n == 0 || n > UINT32_MAX) {
        fprintf(stderr, "bench_actor_create: --n must be 1 to %u\n", UINT32_MAX);
        return 2;
    }
    // The harness's array: resident before the baseline.
    tr_actor_addr *addrs = malloc(n * sizeof *addrs);
    if (addrs == NULL) {
        fprintf(stderr, "bench_actor_create: out of memory for %llu actors\n",
                (unsigned long long)n);
        return 1;
    }
    bench_touch(addrs, n * sizeof *addrs);

    tr_rt *rt = bench_rt_new(&a);
    report rep = {0};
    tr_err e;
    tr_outcome out = {0};
    bench_run(&a, rt, &root_spec, &(root){.n = n, .addrs = addrs, .rep = &rep}, &e, &out);
    tr_rt_free(rt);

    uint64_t stopped = atomic_load(&g_stopped);
    uint64_t good = atomic_load(&g_good);
    bool ok = e == TR_OK && out.err == TR_OK && rep.gate_ok && rep.spawned == n && rep.sent == n &&
              stopped == n && good == n && rep.rss0 > 0 && rep.rss1 >= rep.rss0;
    if (!ok) {
        fprintf(stderr,
                "bench_actor_create: block_on %s, gate %d, spawned %llu, sent %llu, stopped "
                "%llu, good %llu (want %llu)\n",
                tr_strerror(e), rep.gate_ok, (unsigned long long)rep.spawned,
                (unsigned long long)rep.sent, (unsigned long long)stopped, (unsigned long long)good,
                (unsigned long long)n);
    }
    double dn = (double)n;
    bench_line(&a, "total_time", rep.t_stopped - rep.t0, "s", ok);
    bench_line(&a, "spawn_time", rep.t_spawned - rep.t0, "s", ok);
    bench_line(&a, "send_stop_time", rep.t_stopped - rep.t_spawned, "s", ok);
    bench_line(&a, "bytes_per_actor", ((double)rep.rss1 - (double)rep.rss0) / dn, "B/actor", ok);
    bench_line(&a, "slot_bytes_per_actor", ((double)rep.pool1 - (double)rep.pool0) / dn, "B/actor",
               ok);
    bench_line(&a, "actors_per_s", dn / (rep.t_stopped - rep.t0), "actors/s", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(addrs);
    return ok ? 0 : 1;
}

// bench_actor_ping_pong: two actors bounce one message back and forth. Ping
// sends a sequence number to pong, pong echoes it to ping, ping checks it
// and sends the next; N round trips (default 1,000,000), in --pairs K
// independent pairs (default 1). The body is a Troupe__V1__Address used as
// two numbers: node is the pair, actor the sequence number.
//
// The message one side sends back is made in one of three ways (each a
// variant, measured in turn in the same process):
//   resend   the receiver keeps the message it got (tr_actor_keep), sets
//            the number and sends the same message back (tr_actor_send):
//            no allocation per round trip;
//   fresh    the receiver builds a new message (tr_msg_new) and sends it;
//            the received one is freed when receive returns;
//   forward  the receiver passes the message it got on (tr_actor_forward),
//            which keeps the original sender and reply-to.
// --resend, --fresh and --forward run only the variants named (default:
// all three).
//
// The root task spawns pong and then ping of every pair (ping knows pong's
// address; pong learns ping's from the sender of its first message, which
// ping always builds), starts the clock, sends each ping a start message
// and awaits a oneshot. When a ping has done its N round trips it stops
// itself and its pong; every actor counts itself in an atomic in its
// stopped callback, and the last of the 2K sends on the oneshot. So the
// time is the first start message to the last stop, spawning excluded.
//
// Headline: round_trips_resend in round_trips/s (K * N round trips over the
// median time of --runs), then round_trips_fresh and round_trips_forward;
// then, for the headline variant's last run, each worker's polls and
// steals (tr_rt_worker_stats) and the runtime's steals and parks, and peak
// RSS. Self-check, per variant and run: every pair made N round trips,
// every echo carried its pair and the number just sent, pong echoed N, all
// 2K actors stopped and the run ended with TR_OK. Default --workers 2
// --sched ws.
#include <stdatomic.h>

#include <troupe/actor.h>
#include <troupe/troupe.h>

#include "bench.h"
#include "bench_actor.h"

enum { V_RESEND, V_FRESH, V_FORWARD, NVARIANTS };

static const char *const variant_metric[NVARIANTS] = {
    "round_trips_resend",
    "round_trips_fresh",
    "round_trips_forward",
};

// What one pair did, written by its two actors, read by main after the run.
typedef struct pair_result {
    uint64_t trips;  // ping: round trips whose echo matched
    uint64_t echoed; // pong: messages echoed
    uint64_t bad;    // either: messages with the wrong pair or number
} pair_result;

// What the actors of one run share.
typedef struct run_ctx {
    int variant;
    uint64_t n;                 // round trips per pair
    uint64_t want;              // actors that must stop: 2K
    _Atomic uint64_t stopped;   // actors whose stopped callback ran
    _Atomic(tr_oneshot *) gate; // sender end; taken by the last to stop
    pair_result *res;           // one per pair
} run_ctx;

typedef struct player {
    run_ctx *ctx;
    tr_actor_addr peer; // ping: its pong; pong: its ping, from the first message
    uint64_t pair;
    uint64_t seq; // ping: the number sent last; pong: the number expected next
} player;

// bounce sends seq to p's peer the way the run's variant says, m being the
// message receive is handling; false if the send failed.
static bool
bounce(tr_actor *self, player *p, tr_msg *m, uint64_t seq)
{
    tr_err e;
    switch (p->ctx->variant) {
    case V_RESEND:
        tr_actor_keep(self, m);
        bench_num_of(m)->actor = seq;
        e = tr_actor_send(self, p->peer, m);
        if (e != TR_OK) {
            tr_msg_free(m); // kept: ours to free
        }
        return e == TR_OK;
    case V_FORWARD:
        bench_num_of(m)->actor = seq;
        return tr_actor_forward(self, p->peer, m) == TR_OK; // else freed after receive
    default: {
        tr_msg *r = bench_num_msg(p->pair, seq);
        e = tr_actor_send(self, p->peer, r);
        if (e != TR_OK) {
            tr_msg_free(r);
        }
        return e == TR_OK;
    }
    }
}

static void
player_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    (void)reason;
    run_ctx *ctx = ((player *)state)->ctx;
    // acq_rel: the last to stop sees every actor's results, and the
    // oneshot hands them to the root.
    uint64_t k = atomic_fetch_add_explicit(&ctx->stopped, 1, memory_order_acq_rel) + 1;
    if (k == ctx->want) {
        tr_oneshot *g = atomic_exchange_explicit(&ctx->gate, NULL, memory_order_acq_rel);
        if (g != NULL) {
            (void)tr_oneshot_send(g, NULL);
        }
    }
}

// fail stops the pair: a wrong message, or a send that failed.
static void
fail(tr_actor *self, player *p)
{
    p->ctx->res[p->pair].bad++;
    if (!tr_actor_addr_is_none(p->peer)) {
        (void)tr_actor_stop_other(p->peer, TR_EINVAL, "ping-pong broken");
    }
    tr_actor_stop(self, TR_EINVAL, "ping-pong broken");
}

static void
ping_receive(tr_actor *self, void *state, tr_msg *m)
{
    player *p = state;
    const Troupe__V1__Address *b = bench_num_of(m);
    if (b == NULL || b->node != p->pair || b->actor != p->seq) {
        fail(self, p);
        return;
    }
    if (p->seq == 0) {
        // The root's start message (sender none): the first message to pong
        // is always built here, so that pong learns ping's address from it.
        p->seq = 1;
        tr_msg *r = bench_num_msg(p->pair, 1);
        if (tr_actor_send(self, p->peer, r) != TR_OK) {
            tr_msg_free(r);
            fail(self, p);
        }
        return;
    }
    pair_result *res = &p->ctx->res[p->pair];
    if (++res->trips == p->ctx->n) {
        (void)tr_actor_stop_other(p->peer, TR_OK, NULL);
        tr_actor_stop(self, TR_OK, NULL);
        return;
    }
    if (!bounce(self, p, m, ++p->seq)) {
        fail(self, p);
    }
}

static void
pong_receive(tr_actor *self, void *state, tr_msg *m)
{
    player *p = state;
    const Troupe__V1__Address *b = bench_num_of(m);
    if (b == NULL || b->node != p->pair || b->actor != p->seq + 1) {
        fail(self, p);
        return;
    }
    if (tr_actor_addr_is_none(p->peer)) {
        p->peer = tr_msg_sender(m); // forwards keep it: always ping
    }
    p->seq++;
    p->ctx->res[p->pair].echoed++;
    if (!bounce(self, p, m, p->seq)) {
        fail(self, p);
    }
}

static tr_err
player_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(player *)state = *(const player *)arg;
    return TR_OK;
}

static const tr_actor_spec ping_spec = {.name = "ping",
                                        .size = sizeof(player),
                                        .init = player_init,
                                        .receive = ping_receive,
                                        .stopped = player_stopped};

static const tr_actor_spec pong_spec = {.name = "pong",
                                        .size = sizeof(player),
                                        .init = player_init,
                                        .receive = pong_receive,
                                        .stopped = player_stopped};

// ---------------------------------------------------------------------------
// The root task. Its state is a copy (tr_rt_run makes it): what it finds
// goes to the report it points at.

typedef struct report {
    uint64_t started; // actors spawned
    uint64_t kicked;  // start messages sent
    double t0, t1;    // first start message sent, gate opened
    bool gate_ok;     // the gate opened with TR_OK
} report;

typedef struct root {
    int tr_pc;
    run_ctx *ctx;
    uint64_t pairs;
    tr_actor_addr *pings;
    tr_oneshot *gate; // receiver end
    tr_err err;
    report *rep;
} root;

// spawn_pairs starts the pairs, pong first; it stops at the first actor
// that cannot be spawned (a lone pong is stopped again) and returns how
// many actors run.
static uint64_t
spawn_pairs(root *st, tr_cx *cx)
{
    tr_rt *rt = tr_cx_rt(cx);
    uint64_t i;
    for (i = 0; i < st->pairs; i++) {
        player pong = {.ctx = st->ctx, .peer = TR_ACTOR_NONE, .pair = i};
        player ping = {.ctx = st->ctx, .pair = i};
        if (tr_actor_spawn(rt, &pong_spec, &pong, NULL, &ping.peer) != TR_OK) {
            break;
        }
        if (tr_actor_spawn(rt, &ping_spec, &ping, NULL, &st->pings[i]) != TR_OK) {
            (void)tr_actor_stop_other(ping.peer, TR_OK, NULL);
            st->ctx->want = 2 * i + 1;
            return 2 * i + 1;
        }
    }
    st->ctx->want = 2 * i;
    return 2 * i;
}

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    report *rep = st->rep;
    TR_BEGIN(st);
    if (tr_oneshot_new(0, &st->gate) != TR_OK) {
        TR_RETURN(st);
    }
    atomic_store(&st->ctx->gate, st->gate);
    rep->started = spawn_pairs(st, cx);
    if (rep->started < 2 * st->pairs) {
        fprintf(stderr, "bench_actor_ping_pong: spawned %llu actors of %llu\n",
                (unsigned long long)rep->started, (unsigned long long)(2 * st->pairs));
    }
    rep->t0 = bench_now();
    for (uint64_t i = 0; i < rep->started / 2; i++) {
        tr_msg *m = bench_num_msg(i, 0);
        if (tr_actor_send(NULL, st->pings[i], m) != TR_OK) {
            tr_msg_free(m);
            (void)tr_actor_stop_other(st->pings[i], TR_EINVAL, "no start");
            continue;
        }
        rep->kicked++;
    }
    if (rep->started == 0) {
        tr_oneshot *g = atomic_exchange(&st->ctx->gate, NULL); // nobody will stop
        if (g != NULL) {
            tr_oneshot_sender_release(g);
        }
    }
    TR_AWAIT(st, tr_oneshot_recv(st->gate, cx, NULL, &st->err));
    rep->t1 = bench_now();
    rep->gate_ok = st->err == TR_OK;
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

// ---------------------------------------------------------------------------
// Runs.

// The workers' figures of one run, read before its runtime is freed.
typedef struct worker_figs {
    unsigned n;
    tr_worker_stats w[256];
    tr_rt_stats rt;
} worker_figs;

static void
read_figs(tr_rt *rt, worker_figs *f)
{
    tr_rt_get_stats(rt, &f->rt);
    f->n = f->rt.workers < 256 ? f->rt.workers : 256;
    for (unsigned i = 0; i < f->n; i++) {
        if (tr_rt_worker_stats(rt, i, &f->w[i]) != TR_OK) {
            memset(&f->w[i], 0, sizeof f->w[i]);
        }
    }
}

// run_once runs one variant once in a fresh runtime and returns its time in
// seconds; *ok says whether its check passed.
static double
run_once(bench_args *a, int variant, uint64_t pairs, pair_result *res, tr_actor_addr *pings,
         worker_figs *figs, bool *ok)
{
    memset(res, 0, pairs * sizeof *res);
    run_ctx ctx = {.variant = variant, .n = a->n, .want = 2 * pairs, .res = res};
    atomic_init(&ctx.stopped, 0);
    atomic_init(&ctx.gate, NULL);
    report rep = {0};
    tr_rt *rt = bench_rt_new(a);
    tr_err e;
    tr_outcome out = {0};
    bench_run(a, rt, &root_spec, &(root){.ctx = &ctx, .pairs = pairs, .pings = pings, .rep = &rep},
              &e, &out);
    read_figs(rt, figs);
    tr_rt_free(rt);
    uint64_t trips = 0, echoed = 0, bad = 0, short_pairs = 0;
    for (uint64_t i = 0; i < pairs; i++) {
        trips += res[i].trips;
        echoed += res[i].echoed;
        bad += res[i].bad;
        short_pairs += res[i].trips != a->n || res[i].echoed != a->n;
    }
    uint64_t stopped = atomic_load(&ctx.stopped);
    *ok = e == TR_OK && out.err == TR_OK && rep.gate_ok && rep.started == 2 * pairs &&
          rep.kicked == pairs && stopped == 2 * pairs && bad == 0 && short_pairs == 0;
    if (!*ok) {
        fprintf(stderr,
                "bench_actor_ping_pong: %s: block_on %s, gate %d, started %llu, kicked %llu, "
                "stopped %llu, round trips %llu, echoed %llu, bad %llu, short pairs %llu (want "
                "%llu pairs x %llu)\n",
                variant_metric[variant], tr_strerror(e), rep.gate_ok,
                (unsigned long long)rep.started, (unsigned long long)rep.kicked,
                (unsigned long long)stopped, (unsigned long long)trips, (unsigned long long)echoed,
                (unsigned long long)bad, (unsigned long long)short_pairs, (unsigned long long)pairs,
                (unsigned long long)a->n);
    }
    return rep.t1 - rep.t0;
}

int
main(int argc, char **argv)
{
    static uint64_t pairs = 1;
    static bool only[NVARIANTS];
    static const bench_opt opts[] = {
        {.flag = "--pairs", .help = "independent ping-pong pairs (default 1)", .num = &pairs},
        {.flag = "--resend",
         .help = "run the resend variant (default: all)",
         .on = &only[V_RESEND]},
        {.flag = "--fresh", .help = "run the fresh variant (default: all)", .on = &only[V_FRESH]},
        {.flag = "--forward",
         .help = "run the forward variant (default: all)",
         .on = &only[V_FORWARD]},
    };
    static const bench_def def = {
        .name = "actor_ping_pong", .n = 1000000, .workers = 2, .opts = opts, .nopts = 4};
    bench_args a = bench_parse(argc, argv, &def);
    if (pairs == 0 || a.n == 0) {
        fprintf(stderr, "bench_actor_ping_pong: --pairs and --n must be at least 1\n");
        return 2;
    }
    bool any = only[V_RESEND] || only[V_FRESH] || only[V_FORWARD];
    pair_result *res = calloc(pairs, sizeof *res);
    tr_actor_addr *pings = calloc(pairs, sizeof *pings);
    double *secs = calloc(a.runs, sizeof(double));
    static worker_figs figs, head_figs;
    if (res == NULL || pings == NULL || secs == NULL) {
        fprintf(stderr, "bench_actor_ping_pong: out of memory\n");
        return 1;
    }
    bool ok = true;
    bool head = true; // the first variant run is the headline
    for (int v = 0; v < NVARIANTS; v++) {
        if (any && !only[v]) {
            continue;
        }
        bool v_ok = true;
        for (unsigned r = 0; r < a.runs; r++) {
            bool run_ok;
            secs[r] = run_once(&a, v, pairs, res, pings, &figs, &run_ok);
            v_ok = v_ok && run_ok;
        }
        if (head) {
            head_figs = figs;
            head = false;
        }
        double med = bench_median(secs, a.runs);
        bench_line(&a, variant_metric[v], (double)(pairs * a.n) / med, "round_trips/s", v_ok);
        ok = ok && v_ok;
    }
    // The headline variant's last run: where the actors ran.
    for (unsigned i = 0; i < head_figs.n; i++) {
        char m[64];
        snprintf(m, sizeof m, "polls_worker_%u_last_run", i);
        bench_line(&a, m, (double)head_figs.w[i].polls, "count", ok);
        snprintf(m, sizeof m, "steals_worker_%u_last_run", i);
        bench_line(&a, m, (double)head_figs.w[i].steals, "count", ok);
    }
    bench_line(&a, "steals_last_run", (double)head_figs.rt.steals, "count", ok);
    bench_line(&a, "parks_last_run", (double)head_figs.rt.parks, "count", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(res);
    free(pings);
    free(secs);
    return ok ? 0 : 1;
}

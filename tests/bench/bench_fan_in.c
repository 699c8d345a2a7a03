// bench_fan_in: many OS threads send to one actor. --threads T plain
// threads (default 8), not workers, each send --n messages (default
// 1,000,000 per thread) to one actor with an unbounded mailbox, with
// tr_actor_send from no actor (self NULL). Each message is a
// Troupe__V1__Address used as two numbers: node is the thread, actor its
// sequence number 1, 2, ... The actor checks that each thread's numbers
// arrive in order (the order tr_actor_send promises one sender), counts
// them, and when it has all T * N it reads the clock, sends on a oneshot
// the root task awaits and stops.
//
// The actor is spawned and the threads started before the runtime runs
// the root; the threads wait at a barrier with the main thread, and the
// clock starts when the barrier opens, so the figure is from the first
// send to the last message handled (the actor handles them while they are
// being sent). Threads and workers share the cores: with 8 threads and 2
// workers on 2 cores, the operating system decides who runs.
//
// Headline: msgs/s (T * N over the median of --runs); then the median wall
// time and peak RSS (the mailbox is unbounded: what the actor has not
// handled yet stays queued, 256 bytes a message). Self-check, per
// run: every send TR_OK, the actor received T * N messages, every thread's
// in order, and the run ended with TR_OK. Default --workers 2 --sched ws.
#include <stdatomic.h>

#include <troupe/actor.h>
#include <troupe/troupe.h>

#include "bench.h"
#include "bench_actor.h"

#define MAX_THREADS 256

// One run's shared state.
typedef struct fan {
    uint64_t threads, n;
    tr_actor_addr to;
    pthread_barrier_t start;
    double t0;              // the barrier opened (main thread)
    _Atomic uint64_t fails; // sends that did not return TR_OK
    // The actor's own (read by main after the gate):
    uint64_t got, out_of_order, bad;
    uint64_t next[MAX_THREADS]; // per thread: the last sequence number seen
    double t1;                  // the last message handled
    tr_oneshot *gate;           // sender end; sent by the actor
} fan;

typedef struct sink {
    fan *f;
} sink;

static tr_err
sink_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    ((sink *)state)->f = arg;
    return TR_OK;
}

static void
sink_receive(tr_actor *self, void *state, tr_msg *m)
{
    fan *f = ((sink *)state)->f;
    const Troupe__V1__Address *b = bench_num_of(m);
    if (b == NULL || b->node >= f->threads) {
        f->bad++;
    } else {
        if (b->actor != f->next[b->node] + 1) {
            f->out_of_order++;
        }
        f->next[b->node] = b->actor;
    }
    if (++f->got == f->threads * f->n) {
        f->t1 = bench_now();
        (void)tr_oneshot_send(f->gate, NULL);
        f->gate = NULL;
        tr_actor_stop(self, TR_OK, NULL);
    }
}

static const tr_actor_spec sink_spec = {
    .name = "sink", .size = sizeof(sink), .init = sink_init, .receive = sink_receive};

typedef struct sender {
    fan *f;
    uint64_t id;
    pthread_t th;
} sender;

static void *
sender_main(void *arg)
{
    sender *s = arg;
    fan *f = s->f;
    pthread_barrier_wait(&f->start);
    for (uint64_t seq = 1; seq <= f->n; seq++) {
        tr_msg *m = bench_num_msg(s->id, seq);
        if (tr_actor_send(NULL, f->to, m) != TR_OK) {
            tr_msg_free(m);
            atomic_fetch_add_explicit(&f->fails, f->n - seq + 1, memory_order_relaxed);
            break;
        }
    }
    return NULL;
}

// The root only waits for the actor's signal.
typedef struct root {
    tr_oneshot *gate; // receiver end
    bool *gate_ok;
} root;

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_err err = TR_OK;
    if (tr_oneshot_recv(st->gate, cx, NULL, &err) == TR_PENDING) {
        return TR_PENDING;
    }
    *st->gate_ok = err == TR_OK;
    return TR_READY;
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

// run_once runs T threads against one actor in a fresh runtime: its time in
// seconds; *ok says whether the check passed.
static double
run_once(bench_args *a, fan *f, sender *snd, bool *ok)
{
    memset(f->next, 0, sizeof f->next);
    f->got = f->out_of_order = f->bad = 0;
    f->t0 = f->t1 = 0;
    atomic_store(&f->fails, 0);
    tr_oneshot *gate;
    *ok = false;
    if (tr_oneshot_new(0, &gate) != TR_OK) {
        return 0;
    }
    f->gate = gate;
    tr_rt *rt = bench_rt_new(a);
    tr_err e = tr_actor_spawn(rt, &sink_spec, f, NULL, &f->to);
    if (e != TR_OK) {
        fprintf(stderr, "bench_fan_in: spawn: %s\n", tr_strerror(e));
        tr_rt_free(rt);
        return 0;
    }
    pthread_barrier_init(&f->start, NULL, (unsigned)f->threads + 1);
    uint64_t started = 0;
    for (; started < f->threads; started++) {
        snd[started] = (sender){.f = f, .id = started};
        if (pthread_create(&snd[started].th, NULL, sender_main, &snd[started]) != 0) {
            break;
        }
    }
    if (started < f->threads) {
        fprintf(stderr, "bench_fan_in: started %llu threads of %llu\n", (unsigned long long)started,
                (unsigned long long)f->threads);
        exit(1); // the barrier would never open
    }
    pthread_barrier_wait(&f->start);
    f->t0 = bench_now();
    bool gate_ok = false;
    tr_outcome out = {0};
    bench_run(a, rt, &root_spec, &(root){.gate = gate, .gate_ok = &gate_ok}, &e, &out);
    for (uint64_t i = 0; i < f->threads; i++) {
        pthread_join(snd[i].th, NULL);
    }
    tr_rt_free(rt);
    pthread_barrier_destroy(&f->start);
    uint64_t fails = atomic_load(&f->fails);
    uint64_t short_threads = 0;
    for (uint64_t i = 0; i < f->threads; i++) {
        short_threads += f->next[i] != f->n;
    }
    *ok = e == TR_OK && gate_ok && fails == 0 && f->got == f->threads * f->n &&
          f->out_of_order == 0 && f->bad == 0 && short_threads == 0;
    if (!*ok) {
        fprintf(stderr,
                "bench_fan_in: block_on %s, gate %d, failed sends %llu, got %llu, out of order "
                "%llu, bad %llu, threads short %llu (want %llu x %llu)\n",
                tr_strerror(e), gate_ok, (unsigned long long)fails, (unsigned long long)f->got,
                (unsigned long long)f->out_of_order, (unsigned long long)f->bad,
                (unsigned long long)short_threads, (unsigned long long)f->threads,
                (unsigned long long)f->n);
    }
    return f->t1 - f->t0;
}

int
main(int argc, char **argv)
{
    static uint64_t threads = 8;
    static const bench_opt opts[] = {
        {.flag = "--threads", .help = "sending OS threads (default 8)", .num = &threads},
    };
    static const bench_def def = {
        .name = "fan_in", .n = 1000000, .workers = 2, .opts = opts, .nopts = 1};
    bench_args a = bench_parse(argc, argv, &def);
    if (threads == 0 || threads > MAX_THREADS || a.n == 0) {
        fprintf(stderr, "bench_fan_in: --threads 1 to %d and --n at least 1\n", MAX_THREADS);
        return 2;
    }
    static fan f;
    f.threads = threads;
    f.n = a.n;
    sender *snd = calloc(threads, sizeof *snd);
    double *secs = calloc(a.runs, sizeof(double));
    if (snd == NULL || secs == NULL) {
        fprintf(stderr, "bench_fan_in: out of memory\n");
        return 1;
    }
    bool ok = true;
    for (unsigned r = 0; r < a.runs; r++) {
        bool run_ok;
        secs[r] = run_once(&a, &f, snd, &run_ok);
        ok = ok && run_ok;
    }
    double med = bench_median(secs, a.runs);
    bench_line(&a, "fan_in", (double)(threads * a.n) / med, "msgs/s", ok);
    bench_line(&a, "wall", med * 1e3, "ms", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(snd);
    free(secs);
    return ok ? 0 : 1;
}

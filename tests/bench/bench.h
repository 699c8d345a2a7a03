// bench.h: shared helpers for the benchmarks: argument parsing, runtime
// creation, a watchdog, timing, resident and peak RSS and the JSON-lines
// output that README's benchmark contract asks for (bench, sched, workers,
// metric, value, unit, ok; headline first).
//
// Scheduler and workers: --sched rr|ws|hybrid (default ws) and --workers N
// (0: one per core; each benchmark picks its default) go into the
// tr_rt_config. ignore_env stays false, so TROUPE_SCHED, TROUPE_WORKERS and
// TROUPE_DETERMINISTIC override the flags, as for any troupe program: the
// benchmarks then measure what a user running with those variables gets.
// The JSON lines therefore never echo the flags: "sched" and "workers" are
// read back from tr_rt_get_stats after the runtime is created, so they are
// what was actually measured. (A benchmark whose variant depends on one
// scheduler, ping_pong --apart, sets ignore_env itself.)
//
// Every run is bounded: a watchdog thread ends the process with exit code 3
// and a dump of the live tasks when one run takes longer than --timeout
// seconds (default 120), so a lost wakeup shows up as a failure, not a hang;
// it first prints the runtime's counters and up to 32 of its live tasks.
#ifndef TR_BENCH_H
#define TR_BENCH_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <troupe/troupe.h>

// A benchmark's own flag: a number (num) or a switch (on); exactly one of
// the two pointers is set. The number's initial value is its default.
typedef struct bench_opt {
    const char *flag; // "--yields"
    const char *help; // one line for the usage text
    uint64_t *num;
    bool *on;
} bench_opt;

// What a benchmark accepts besides the common flags.
typedef struct bench_def {
    const char *name;      // "spawn_join": the executable is bench_<name>
    uint64_t n;            // default --n (the size)
    unsigned workers;      // default --workers
    const bench_opt *opts; // its own flags (may be NULL)
    size_t nopts;
} bench_def;

typedef struct bench_args {
    const char *name;
    unsigned workers;    // requested (0: one per core)
    tr_sched_kind sched; // requested
    uint64_t n;
    unsigned runs;
    unsigned timeout_s; // per run; 0 disables the watchdog
    bool ignore_env;    // set by a benchmark before bench_rt_new
    // What the runtime actually used (tr_rt_get_stats after creation): the
    // environment may override the request. Printed in the JSON lines.
    unsigned used_workers;
    tr_sched_kind used_sched;
} bench_args;

static inline void
bench_usage(const bench_def *d)
{
    fprintf(stderr,
            "usage: bench_%s [--workers N] [--sched rr|ws|hybrid] [--n COUNT] [--runs R]\n"
            "       [--timeout S]",
            d->name);
    for (size_t i = 0; i < d->nopts; i++) {
        fprintf(stderr, " [%s%s]", d->opts[i].flag, d->opts[i].num != NULL ? " N" : "");
    }
    fprintf(stderr,
            "\n"
            "  --workers  worker threads, 0 = one per core (default %u)\n"
            "  --sched    scheduler (default ws)\n"
            "  --n        problem size (default %llu)\n"
            "  --runs     repetitions; the median is the headline (default 5)\n"
            "  --timeout  seconds one run may take before the process fails (default 120;\n"
            "             0 = no limit)\n",
            d->workers, (unsigned long long)d->n);
    for (size_t i = 0; i < d->nopts; i++) {
        fprintf(stderr, "  %-9s  %s\n", d->opts[i].flag, d->opts[i].help);
    }
    fprintf(stderr, "TROUPE_SCHED, TROUPE_WORKERS and TROUPE_DETERMINISTIC override the flags;\n"
                    "the JSON lines report the scheduler and workers actually used.\n");
}

// bench_num parses a whole decimal number, or exits with the usage text.
static inline uint64_t
bench_num(const bench_def *d, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        fprintf(stderr, "bench_%s: not a number: %s\n", d->name, s);
        bench_usage(d);
        exit(2);
    }
    return v;
}

static inline tr_sched_kind
bench_sched(const bench_def *d, const char *s)
{
    tr_sched_kind k;
    if (tr_sched_parse(s, &k) == TR_OK) {
        return k;
    }
    fprintf(stderr, "bench_%s: %s\n", d->name, tr_error_detail());
    bench_usage(d);
    exit(2);
}

// bench_parse reads the common flags and the benchmark's own; anything else
// prints the usage text and exits 2.
static inline bench_args
bench_parse(int argc, char **argv, const bench_def *d)
{
    bench_args a = {.name = d->name,
                    .workers = d->workers,
                    .sched = TR_SCHED_WS,
                    .n = d->n,
                    .runs = 5,
                    .timeout_s = 120};
    a.used_workers = a.workers;
    a.used_sched = a.sched;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(f, "--workers") == 0 && has_val) {
            uint64_t v = bench_num(d, argv[++i]);
            if (v > 256) {
                fprintf(stderr, "bench_%s: --workers at most 256\n", d->name);
                exit(2);
            }
            a.workers = (unsigned)v;
        } else if (strcmp(f, "--sched") == 0 && has_val) {
            a.sched = bench_sched(d, argv[++i]);
        } else if (strcmp(f, "--n") == 0 && has_val) {
            a.n = bench_num(d, argv[++i]);
        } else if (strcmp(f, "--runs") == 0 && has_val) {
            a.runs = (unsigned)bench_num(d, argv[++i]);
        } else if (strcmp(f, "--timeout") == 0 && has_val) {
            a.timeout_s = (unsigned)bench_num(d, argv[++i]);
        } else {
            size_t k = 0;
            while (k < d->nopts && strcmp(f, d->opts[k].flag) != 0) {
                k++;
            }
            if (k < d->nopts && d->opts[k].on != NULL) {
                *d->opts[k].on = true;
            } else if (k < d->nopts && has_val) {
                *d->opts[k].num = bench_num(d, argv[++i]);
            } else {
                bench_usage(d);
                exit(2);
            }
        }
    }
    if (a.runs == 0) {
        a.runs = 1;
    }
    a.used_workers = a.workers;
    a.used_sched = a.sched;
    return a;
}

// ---------------------------------------------------------------------------
// The watchdog. One thread, started with the first runtime; bench_watch arms
// it for one run (rt not NULL) or disarms it (rt NULL).

typedef struct bench_watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started;
    tr_rt *rt;           // the runtime of the run being watched, or NULL
    struct timespec due; // CLOCK_MONOTONIC deadline of that run
    const char *name;
    unsigned timeout_s;
} bench_watchdog;

static bench_watchdog bench__wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static inline void
bench__watchdog_task(const tr_task_info *ti, void *arg)
{
    uint64_t *seen = arg;
    if ((*seen)++ < 32) {
        fprintf(stderr, "  task %#llx %s: %s, %u polls, %u sleeps, idle %llu ms\n",
                (unsigned long long)ti->id.id, ti->name, tr_task_state_name(ti->state), ti->polls,
                ti->sleeps, (unsigned long long)ti->idle_ms);
    }
}

// bench__watchdog_report describes a stuck run. The run is inside block_on,
// so the runtime is alive; the calls used here are allowed from any thread.
// At most 32 tasks are listed (spawn_join has a million).
static inline void
bench__watchdog_report(void)
{
    tr_rt *rt = bench__wd.rt;
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    fprintf(stderr,
            "bench_%s: a run took longer than %u s (sched %s, %u workers): live %llu, "
            "spawned %llu, completed %llu, polls %llu, steals %llu, parks %llu\n",
            bench__wd.name, bench__wd.timeout_s, tr_sched_name(st.sched), st.workers,
            (unsigned long long)st.live_tasks, (unsigned long long)st.spawned,
            (unsigned long long)st.completed, (unsigned long long)st.polls,
            (unsigned long long)st.steals, (unsigned long long)st.parks);
    for (unsigned i = 0; i < st.workers; i++) {
        tr_worker_stats ws;
        if (tr_rt_worker_stats(rt, i, &ws) == TR_OK) {
            fprintf(stderr,
                    "  worker %u: polls %llu, steals %llu, parks %llu, injector %llu, lifo %llu, "
                    "queued %llu\n",
                    i, (unsigned long long)ws.polls, (unsigned long long)ws.steals,
                    (unsigned long long)ws.parks, (unsigned long long)ws.injector_pops,
                    (unsigned long long)ws.lifo_hits, (unsigned long long)ws.queue_len);
        }
    }
    uint64_t seen = 0;
    tr_rt_foreach_task(rt, bench__watchdog_task, &seen);
    if (seen > 32) {
        fprintf(stderr, "  ... %llu tasks in all\n", (unsigned long long)seen);
    }
    fflush(stderr);
}

static inline void *
bench__watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&bench__wd.mu);
    for (;;) {
        if (bench__wd.rt == NULL) {
            pthread_cond_wait(&bench__wd.cv, &bench__wd.mu);
            continue;
        }
        int rv = pthread_cond_timedwait(&bench__wd.cv, &bench__wd.mu, &bench__wd.due);
        if (rv == ETIMEDOUT && bench__wd.rt != NULL) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > bench__wd.due.tv_sec ||
                (now.tv_sec == bench__wd.due.tv_sec && now.tv_nsec >= bench__wd.due.tv_nsec)) {
                bench__watchdog_report();
                _exit(3);
            }
        }
    }
    return NULL;
}

static inline void
bench_watch(const bench_args *a, tr_rt *rt)
{
    if (a->timeout_s == 0) {
        return;
    }
    pthread_mutex_lock(&bench__wd.mu);
    if (!bench__wd.started) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_destroy(&bench__wd.cv);
        pthread_cond_init(&bench__wd.cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_t t;
        if (pthread_create(&t, NULL, bench__watchdog_main, NULL) != 0) {
            fprintf(stderr, "bench_%s: cannot start the watchdog\n", a->name);
            exit(1);
        }
        pthread_detach(t);
        bench__wd.started = true;
        bench__wd.name = a->name;
        bench__wd.timeout_s = a->timeout_s;
    }
    bench__wd.rt = rt;
    clock_gettime(CLOCK_MONOTONIC, &bench__wd.due);
    bench__wd.due.tv_sec += (time_t)a->timeout_s;
    pthread_cond_signal(&bench__wd.cv);
    pthread_mutex_unlock(&bench__wd.mu);
}

// ---------------------------------------------------------------------------
// Runtimes.

// bench_rt_new creates a runtime with the requested scheduler and workers
// and records what it actually uses in a->used_*. On failure it prints the
// error and exits 1.
static inline tr_rt *
bench_rt_new(bench_args *a)
{
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = a->workers;
    cfg.sched = a->sched;
    cfg.ignore_env = a->ignore_env;
    tr_rt *rt;
    tr_err e = tr_rt_new(&cfg, &rt);
    if (e != TR_OK) {
        fprintf(stderr, "bench_%s: tr_rt_new(workers %u, sched %s): %s: %s\n", a->name, a->workers,
                tr_sched_name(a->sched), tr_strerror(e), tr_error_detail());
        exit(1);
    }
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    a->used_workers = st.workers;
    a->used_sched = st.sched;
    return rt;
}

static inline double
bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// bench_run runs a root of kind spec on rt under the watchdog, made as
// tr_rt_run makes it (its state a copy of *init, spec->size bytes), and
// returns the seconds tr_rt_run took (making the root is one allocation
// and copy of those); *e and *out receive its results.
static inline double
bench_run(const bench_args *a, tr_rt *rt, const tr_task_spec *spec, const void *init, tr_err *e,
          tr_outcome *out)
{
    bench_watch(a, rt);
    double t0 = bench_now();
    *e = tr_rt_run(rt, spec, NULL, (void *)init, out);
    double t1 = bench_now();
    bench_watch(a, NULL);
    return t1 - t0;
}

// ---------------------------------------------------------------------------
// Figures.

static inline uint64_t
bench_peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024u;
}

// bench_pool_bytes returns the memory rt's task pool holds for slots
// (tr_rt_stats.pool_bytes).
static inline uint64_t
bench_pool_bytes(tr_rt *rt)
{
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    return st.pool_bytes;
}

// bench_rss reads the resident set (VmRSS) from /proc/self/statm (pages)
// without allocating, so reading it does not change it; 0 if it cannot.
static inline uint64_t
bench_rss(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    unsigned long long size = 0, resident = 0;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2) {
        return 0;
    }
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

// bench_touch writes one byte per page of p so that the memory is resident
// before a baseline is read (calloc'd or fresh malloc'd pages are not).
static inline void
bench_touch(void *p, size_t len)
{
    volatile unsigned char *b = p;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t off = 0; off < len; off += page) {
        b[off] = 0;
    }
    if (len > 0) {
        b[len - 1] = 0;
    }
}

static inline int
bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// bench_median sorts v in place and returns its median.
static inline double
bench_median(double *v, unsigned n)
{
    qsort(v, n, sizeof(double), bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline void
bench_line(const bench_args *a, const char *metric, double value, const char *unit, bool ok)
{
    printf("{\"bench\":\"%s\",\"sched\":\"%s\",\"workers\":%u,\"metric\":\"%s\","
           "\"value\":%.6g,\"unit\":\"%s\",\"ok\":%s}\n",
           a->name, tr_sched_name(a->used_sched), a->used_workers, metric, value, unit,
           ok ? "true" : "false");
    fflush(stdout);
}

#endif

// bench.h: shared helpers for the benchmarks: argument parsing, timing,
// peak RSS and the JSON-lines output that DESIGN.md's contract asks for
// (bench, sched, workers, metric, value, unit, ok; headline first).
#ifndef TR_BENCH_H
#define TR_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct bench_args {
    unsigned workers;
    const char *sched;
    uint64_t n;
    unsigned runs;
} bench_args;

static inline void
bench_usage(const char *name, uint64_t n_default)
{
    fprintf(stderr,
            "usage: bench_%s [--workers N] [--sched rr|ws|hybrid] [--n COUNT] [--runs R]\n"
            "  --n     problem size (default %llu)\n"
            "  --runs  repetitions; the median is the headline (default 5)\n",
            name, (unsigned long long)n_default);
}

static inline bench_args
bench_parse(int argc, char **argv, const char *name, uint64_t n_default)
{
    bench_args a = {1, "fifo", n_default, 5};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            a.workers = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--sched") == 0 && i + 1 < argc) {
            a.sched = argv[++i];
        } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            a.n = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            a.runs = (unsigned)strtoul(argv[++i], NULL, 10);
        } else {
            bench_usage(name, n_default);
            exit(2);
        }
    }
    if (a.runs == 0) {
        a.runs = 1;
    }
    return a;
}

static inline double
bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint64_t
bench_peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024u;
}

static inline int
bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double
bench_median(double *v, unsigned n)
{
    qsort(v, n, sizeof(double), bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline void
bench_line(const char *bench, const bench_args *a, const char *metric, double value,
           const char *unit, bool ok)
{
    printf("{\"bench\":\"%s\",\"sched\":\"%s\",\"workers\":%u,\"metric\":\"%s\","
           "\"value\":%.6g,\"unit\":\"%s\",\"ok\":%s}\n",
           bench, a->sched, a->workers, metric, value, unit, ok ? "true" : "false");
    fflush(stdout);
}

#endif

// bench_daemon_exec: exec jobs of /bin/true through a real trouped, two at
// a time, against a bare spawn loop and task-spooler in the same run.
//
//   bench_daemon_exec [--jobs N] [--parallel P] [--batch B] [--process]
//                     [--no-tsp] [--timeout S]
//
// trouped: one client submits N jobs of /bin/true in a group with
// parallel P (Submits of B jobs, default 1000, one after the other; the
// first ones run while the rest are sent), --durability full unless
// --process. The time runs from the first Submit to every job final in
// the store (bench_wait_all). Self-check: every job succeeded, and the
// output of a sample of 16 jobs (stdout and stderr: empty, at its end) is
// readable through Logs. While trouped does not serve Logs (TR_ENOTSUP)
// that check fails: the lines say so in a reason field and the program
// exits 1.
//
// CPU: trouped's own CPU (utime + stime of all its threads) and its
// children's (the jobs, which it reaps) are read from /proc/<pid>/stat
// before the first Submit and after the last job's end, so start-up and
// shutdown are not in them; per job. wait4's rusage after it exits holds
// both (and shutdown) and is printed as the total, a cross-check.
//
// The bare loop: P threads, each posix_spawn /bin/true with stdout and
// stderr on a pipe, read the pipe to EOF, waitpid; N jobs in all. It is
// what the daemon does per job without the daemon.
//
// task-spooler: its own server (TMPDIR and TS_SOCKET in a fresh
// directory, TS_SLOTS=P and tsp -S P), N `tsp /bin/true` run one after
// the other as a shell loop would (each keeps its output in a file in
// TMPDIR), then tsp -w for the last and tsp -l until every job shows
// finished with exit level 0.
//
// Lines: trouped's jobs/s (the headline), the bare loop's and
// task-spooler's, the two ratios against the targets (>= 0.75x the bare
// loop, >= 3x task-spooler), trouped's CPU per job (own, children, wait4
// total), the Logs check, the shutdown time, and what creating a file
// costs on the state directory's filesystem as the run starts (trouped
// creates two output files per job; see bench_create_probe).
#define _GNU_SOURCE
#include "bench_daemon.h"

#include <stdatomic.h>

static uint64_t o_jobs = 2000, o_parallel = 2, o_batch = 1000;
static bool o_process, o_no_tsp;

#define TARGET_VS_BARE 0.75
#define TARGET_VS_TSP 3.0
#define LOG_SAMPLE 16

typedef struct result {
    double jobs_s, secs;
    bool ok;
    char why[384];
    bool logs_ok;
    char logs_why[384];
    bench_cpu cpu0, cpu1;
    bool have_cpu;
    double wait4_cpu, stop_s;
    bool stop_ok;
    double create_us; // bench_create_probe in the state directory
} result;

static void
run_daemon(result *r)
{
    bench_daemon d;
    char *extra[] = {"--durability", o_process ? "process" : "full", NULL};
    bench_daemon_start(&d, extra);
    r->create_us = bench_create_probe(d.bd_state, 200);
    tr_client *c = bench_daemon_connect(&d);
    char *argv[] = {"/bin/true"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 1;
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    js.group = "bench";
    js.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    js.exec = &ex;
    Troupe__V1__GroupSpec g = TROUPE__V1__GROUP_SPEC__INIT;
    g.name = "bench";
    g.parallel = (uint32_t)o_parallel;
    Troupe__V1__GroupSpec *gs[] = {&g};
    Troupe__V1__JobSpec **specs = calloc(o_batch, sizeof *specs);
    for (uint64_t i = 0; i < o_batch; i++) {
        specs[i] = &js;
    }
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.groups = gs;
    b.n_groups = 1;
    b.jobs = specs;
    r->ok = true;
    uint64_t first_id = 0, last = 0;
    r->have_cpu = bench_daemon_cpu(&d, &r->cpu0);
    double t0 = bench_now();
    for (uint64_t sent = 0; sent < o_jobs && r->ok;) {
        uint64_t n = o_jobs - sent < o_batch ? o_jobs - sent : o_batch;
        b.n_jobs = n;
        b.job_count = (uint32_t)n;
        uint64_t first = 0;
        uint32_t count = 0;
        tr_err rv = tr_client_submit(c, &b, &first, &count);
        if (rv != TR_OK || count != n) {
            r->ok = false;
            snprintf(r->why, sizeof r->why, "Submit: %s (%s)", tr_strerror(rv), tr_client_error());
            break;
        }
        if (first_id == 0) {
            first_id = first;
        }
        last = first + count - 1;
        sent += n;
    }
    tr_err rv = r->ok ? bench_wait_all(c, last, 120000) : TR_OK;
    r->secs = bench_now() - t0;
    r->have_cpu = bench_daemon_cpu(&d, &r->cpu1) && r->have_cpu;
    r->jobs_s = (double)o_jobs / r->secs;
    if (rv != TR_OK) {
        r->ok = false;
        snprintf(r->why, sizeof r->why, "waiting for the jobs: %s (%s)", tr_strerror(rv),
                 tr_client_error());
    }
    uint64_t ok_jobs = 0;
    if (r->ok && (rv = bench_count_state(c, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED,
                                         &ok_jobs)) != TR_OK) {
        r->ok = false;
        snprintf(r->why, sizeof r->why, "ListJobs: %s (%s)", tr_strerror(rv), tr_client_error());
    } else if (r->ok && ok_jobs != o_jobs) {
        r->ok = false;
        snprintf(r->why, sizeof r->why, "%llu jobs succeeded of %llu", (unsigned long long)ok_jobs,
                 (unsigned long long)o_jobs);
    }

    // Logs of a sample: each stream empty (true writes nothing) and at its end.
    r->logs_ok = r->ok;
    if (!r->ok) {
        snprintf(r->logs_why, sizeof r->logs_why, "not checked: %.300s", r->why);
    }
    for (uint64_t i = 0; i < LOG_SAMPLE && r->logs_ok; i++) {
        uint64_t id = first_id + i * (o_jobs - 1) / (LOG_SAMPLE - 1);
        for (uint32_t stream = 1; stream <= 2 && r->logs_ok; stream++) {
            tr_msg *reply = NULL;
            rv = bench_logs(c, id, stream, 0, false, &reply);
            if (rv != TR_OK) {
                r->logs_ok = false;
                snprintf(r->logs_why, sizeof r->logs_why, "Logs of job %llu stream %u: %s (%s)%s",
                         (unsigned long long)id, stream, tr_err_name(rv), tr_client_error(),
                         rv == TR_ENOTSUP ? ": trouped does not serve Logs yet" : "");
                break;
            }
            const Troupe__V1__LogChunk *lc = bench_log_chunk(reply);
            if (lc->data.len != 0 || !lc->eof) {
                r->logs_ok = false;
                snprintf(r->logs_why, sizeof r->logs_why,
                         "Logs of job %llu stream %u: %zu bytes, eof %d; want 0 bytes and eof",
                         (unsigned long long)id, stream, lc->data.len, (int)lc->eof);
            }
            tr_msg_free(reply);
        }
    }
    tr_client_close(c);
    r->stop_ok = bench_daemon_stop(&d, 10000);
    r->stop_s = d.bd_stop_s;
    r->wait4_cpu = bench_ru_cpu(&d.bd_ru);
    bench_daemon_free(&d);
    free(specs);
}

// ---------------------------------------------------------------------------
// The bare loop.

typedef struct bare {
    _Atomic uint64_t b_next;
    uint64_t b_n;
    _Atomic uint64_t b_ok;
} bare;

static void *
bare_main(void *arg)
{
    bare *b = arg;
    char *argv[] = {"/bin/true", NULL};
    // atomic_fetch_add hands out jobs; relaxed: only the count matters.
    while (atomic_fetch_add_explicit(&b->b_next, 1, memory_order_relaxed) < b->b_n) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            break;
        }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        posix_spawn_file_actions_adddup2(&fa, p[1], 2);
        pid_t pid;
        int rv = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(p[1]);
        char buf[256];
        while (rv == 0 && read(p[0], buf, sizeof buf) > 0) {
        }
        close(p[0]);
        int st = 0;
        if (rv == 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            atomic_fetch_add_explicit(&b->b_ok, 1, memory_order_relaxed);
        }
    }
    return NULL;
}

static double
run_bare(bool *ok)
{
    bare b = {.b_n = o_jobs};
    pthread_t th[64];
    unsigned nt = o_parallel < 64 ? (unsigned)o_parallel : 64;
    double t0 = bench_now();
    for (unsigned i = 0; i < nt; i++) {
        pthread_create(&th[i], NULL, bare_main, &b);
    }
    for (unsigned i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
    }
    double secs = bench_now() - t0;
    *ok = atomic_load(&b.b_ok) == o_jobs;
    return (double)o_jobs / secs;
}

// ---------------------------------------------------------------------------
// task-spooler.

// tsp_unfinished counts the jobs tsp -l shows that are not finished with
// exit level 0, and all jobs listed; false if tsp -l fails.
static bool
tsp_unfinished(bench_tsp *t, uint64_t *unfinished, uint64_t *listed)
{
    size_t cap = 256 + (size_t)o_jobs * 128;
    char *out = malloc(cap);
    char *args[] = {"-l", NULL};
    int st = bench_tsp_run(t, args, out, cap);
    *unfinished = *listed = 0;
    if (st != 0) {
        free(out);
        return false;
    }
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned long long id;
        char state[32];
        if (sscanf(line, "%llu %31s", &id, state) != 2) {
            continue; // the header
        }
        (*listed)++;
        // "ID State Output E-Level ...": a finished job's line has its
        // exit level as the fourth column.
        int level = -1;
        char outf[256];
        bool fin = strcmp(state, "finished") == 0 &&
                   sscanf(line, "%*u %*s %255s %d", outf, &level) == 2 && level == 0;
        if (!fin) {
            (*unfinished)++;
        }
    }
    free(out);
    return true;
}

static double
run_tsp(bool *ok, char *why, size_t whylen)
{
    bench_tsp t;
    *ok = false;
    if (!bench_tsp_start(&t, (unsigned)o_parallel, o_jobs + 100, why, whylen)) {
        bench_tsp_stop(&t);
        return NAN;
    }
    char *args[] = {"/bin/true", NULL};
    double t0 = bench_now();
    for (uint64_t i = 0; i < o_jobs; i++) {
        int st = bench_tsp_run(&t, args, NULL, 0);
        if (st != 0) {
            snprintf(why, whylen, "tsp /bin/true: status %d", st);
            bench_tsp_stop(&t);
            return NAN;
        }
    }
    char *wargs[] = {"-w", NULL};
    bench_tsp_run(&t, wargs, NULL, 0);
    uint64_t unfinished = 0, listed = 0;
    // The last one added may end before the one beside it: look again.
    while (tsp_unfinished(&t, &unfinished, &listed) && unfinished > 0 && listed == o_jobs &&
           bench_now() - t0 < 120) {
        usleep(1000);
    }
    double secs = bench_now() - t0;
    *ok = unfinished == 0 && listed == o_jobs;
    if (!*ok) {
        snprintf(why, whylen, "tsp -l shows %llu jobs, %llu not finished with level 0",
                 (unsigned long long)listed, (unsigned long long)unfinished);
    }
    bench_tsp_stop(&t);
    return (double)o_jobs / secs;
}

int
main(int argc, char **argv)
{
    static const bench_opt opts[] = {
        {"--jobs", "jobs of /bin/true (default 2000)", &o_jobs, NULL},
        {"--parallel", "the group's parallelism, the bare loop's threads, tsp's slots (2)",
         &o_parallel, NULL},
        {"--batch", "jobs per Submit (default 1000)", &o_batch, NULL},
        {"--process", "trouped --durability process (default full)", NULL, &o_process},
        {"--no-tsp", "skip task-spooler", NULL, &o_no_tsp},
    };
    static const bench_def def = {"daemon_exec", 2000, 0, opts, 5};
    bench_args a = bench_parse(argc, argv, &def);
    if (o_jobs == def.n) {
        o_jobs = a.n; // --n is --jobs
    }
    if (o_jobs < LOG_SAMPLE || o_parallel == 0 || o_batch == 0 || o_batch > 4096) {
        fprintf(stderr,
                "bench_daemon_exec: --jobs at least %d, --parallel at least 1, "
                "--batch 1 to 4096\n",
                LOG_SAMPLE);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bench_daemon_env(&a);

    result r = {0};
    fprintf(stderr, "bench_daemon_exec: trouped, %llu jobs\n", (unsigned long long)o_jobs);
    bench_dwatch_arm(&a, "trouped");
    run_daemon(&r);
    fprintf(stderr, "bench_daemon_exec: bare loop\n");
    bench_dwatch_arm(&a, "the bare spawn loop");
    bool bare_ok;
    double bare_s = run_bare(&bare_ok);
    bool tsp_ok = false;
    char tsp_why[256] = "skipped (--no-tsp)";
    double tsp_s = NAN;
    if (!o_no_tsp) {
        fprintf(stderr, "bench_daemon_exec: task-spooler\n");
        bench_dwatch_arm(&a, "task-spooler");
        tsp_s = run_tsp(&tsp_ok, tsp_why, sizeof tsp_why);
    }
    bench_dwatch_disarm();

    bool ok = r.ok && r.logs_ok;
    char f[1024] = "";
    if (!r.ok) {
        bench_dfield(f, sizeof f, "reason", r.why);
    } else if (!r.logs_ok) {
        bench_dfield(f, sizeof f, "reason", r.logs_why);
    }
    char num[64];
    snprintf(num, sizeof num, "%llu", (unsigned long long)o_parallel);
    bench_dfield(f, sizeof f, "parallel", num);
    bench_dfield(f, sizeof f, "durability", o_process ? "process" : "full");
    bench_dline(&a, "jobs", r.jobs_s, "jobs/s", ok, f);
    bench_dline(&a, "bare_spawn_loop_jobs", bare_s, "jobs/s", bare_ok, NULL);
    char tf[384] = "";
    if (!tsp_ok) {
        bench_dfield(tf, sizeof tf, "reason", tsp_why);
    }
    bench_dline(&a, "tsp_jobs", tsp_ok ? tsp_s : NAN, "jobs/s", tsp_ok, tf);
    char t1[128] = "", t2[384] = "";
    double vb = r.jobs_s / bare_s, vt = tsp_ok ? r.jobs_s / tsp_s : NAN;
    snprintf(num, sizeof num, ">= %.2fx: %s", TARGET_VS_BARE,
             vb >= TARGET_VS_BARE ? "met" : "missed");
    bench_dfield(t1, sizeof t1, "target", num);
    bench_dline(&a, "vs_bare_loop", vb, "ratio", r.ok && bare_ok, t1);
    snprintf(num, sizeof num, ">= %.1fx: %s", TARGET_VS_TSP,
             !tsp_ok               ? "not measured"
             : vt >= TARGET_VS_TSP ? "met"
                                   : "missed");
    bench_dfield(t2, sizeof t2, "target", num);
    if (!tsp_ok) {
        bench_dfield(t2, sizeof t2, "reason", tsp_why);
    }
    bench_dline(&a, "vs_tsp", vt, "ratio", r.ok && tsp_ok, t2);
    char cf[256] = "";
    if (!r.have_cpu) {
        bench_dfield(cf, sizeof cf, "reason", "/proc/<pid>/stat of trouped was not readable");
    }
    double per = 1e6 / (double)o_jobs;
    bench_dline(&a, "daemon_cpu_per_job",
                r.have_cpu ? (r.cpu1.cpu_self - r.cpu0.cpu_self) * per : NAN, "us", r.have_cpu, cf);
    bench_dline(&a, "children_cpu_per_job",
                r.have_cpu ? (r.cpu1.cpu_children - r.cpu0.cpu_children) * per : NAN, "us",
                r.have_cpu, cf);
    char wf[256] = "";
    bench_dfield(wf, sizeof wf, "note",
                 "wait4 rusage of trouped: itself and its reaped children, start to exit");
    bench_dline(&a, "wait4_cpu_per_job", r.wait4_cpu * per, "us", r.stop_ok, wf);
    char lf[512] = "";
    if (!r.logs_ok) {
        bench_dfield(lf, sizeof lf, "reason", r.logs_why);
    }
    bench_dline(&a, "logs_sample_checked", r.logs_ok ? LOG_SAMPLE : 0, "jobs", r.logs_ok, lf);
    bench_dline(&a, "shutdown", r.stop_s, "s", r.stop_ok, NULL);
    char pf[384] = "";
    bench_dfield(pf, sizeof pf, "note",
                 "creating an empty file in trouped's state dir, measured by the benchmark "
                 "before its jobs: trouped creates two output files per job");
    bench_dline(&a, "file_create_p50", r.create_us, "us", !isnan(r.create_us), pf);
    return ok && bare_ok && r.stop_ok ? 0 : 1;
}

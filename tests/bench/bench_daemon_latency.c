// bench_daemon_latency: one short job (`echo hi`) through a real trouped,
// from its Submit being sent to its output readable by the client, one
// job after the other; a bare spawn-and-read and task-spooler in the same
// run.
//
//   bench_daemon_latency [--n N] [--follow] [--process] [--tsp-n M]
//                        [--no-tsp] [--timeout S]
//
// trouped (--durability full unless --process): N times, Submit an exec
// job {"echo", "hi"}, WaitJobs on its id, then Logs of its stdout from
// offset 0, which must return "hi\n" (the self-check, every job). With
// --follow the client skips the Wait: Submit, then Logs with follow=true
// until it holds "hi\n" (one round trip fewer when the daemon holds the
// request until the output comes). The time at Wait's return
// is also kept: submit-to-final, the part that does not need Logs.
//
// While trouped does not serve Logs (TR_ENOTSUP), the submit-to-output
// lines have value null, ok false and a reason, the loop still runs
// Submit + Wait for the submit-to-final lines, and the program exits 1.
//
// The bare spawn-and-read: posix_spawn /bin/echo hi with stdout on a
// pipe, read it to EOF ("hi\n"), waitpid; N times. task-spooler (its own
// server, TMPDIR and socket): `tsp echo hi` (its job id on stdout), `tsp
// -w ID`, `tsp -c ID` (the output, "hi\n"); M times (default 200: three
// program runs each).
//
// Lines: submit-to-output p50 (the headline; target <= 2 ms) and p99,
// submit-to-final p50/p99, the Submit call's own p50 (its reply leaves
// after its COMMIT), the bare spawn-and-read's p50/p99 and
// task-spooler's, all in ms, and what creating a file costs on the state
// directory's filesystem as the run starts (trouped creates two output
// files per job; see bench_create_probe).
#define _GNU_SOURCE
#include "bench_daemon.h"

static bool o_follow, o_process, o_no_tsp;
static uint64_t o_tsp_n = 200;

#define TARGET_P50_MS 2.0

typedef struct lat {
    double *out_ms, *final_ms, *sub_ms;
    size_t n_out, n_final, n_sub;
    bool ok;          // every job's output was "hi\n"
    bool logs;        // trouped serves Logs
    double create_us; // bench_create_probe in the state directory
    char why[384];
} lat;

// read_output gets job id's stdout through Logs into buf (len bytes):
// TR_OK with the bytes and eof, or the call's error.
static tr_err
read_output(tr_client *c, uint64_t id, bool follow, char *buf, size_t len, size_t *got, bool *eof)
{
    *got = 0;
    *eof = false;
    for (int round = 0; round < 64; round++) {
        tr_msg *reply = NULL;
        tr_err rv = bench_logs(c, id, 1, *got, follow, &reply);
        if (rv != TR_OK) {
            return rv;
        }
        const Troupe__V1__LogChunk *lc = bench_log_chunk(reply);
        size_t n = lc->data.len < len - *got ? lc->data.len : len - *got;
        if (n > 0) { // an empty chunk's data may be NULL
            memcpy(buf + *got, lc->data.data, n);
        }
        *got += n;
        *eof = lc->eof;
        tr_msg_free(reply);
        // Readable is the moment it holds "hi\n": a follower need not
        // wait for the end of the stream.
        if (*eof || !follow || *got >= 3) {
            return TR_OK;
        }
    }
    return TR_OK;
}

static tr_err
submit_echo(tr_client *c, uint64_t *id)
{
    char *argv[] = {"echo", "hi"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 2;
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    js.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    js.exec = &ex;
    Troupe__V1__JobSpec *jobs[] = {&js};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    b.job_count = 1;
    uint32_t count = 0;
    tr_err rv = tr_client_submit(c, &b, id, &count);
    return rv == TR_OK && count != 1 ? TR_EINVAL : rv;
}

static tr_err
wait_one(tr_client *c, uint64_t id)
{
    tr_msg *reply = NULL;
    bool timed_out = true;
    tr_err rv = tr_client_wait(c, &id, 1, 10000, &reply, &timed_out);
    if (rv == TR_OK) {
        const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
        if (timed_out) {
            rv = TR_ETIMEDOUT;
        } else if (jl->n_jobs != 1 ||
                   jl->jobs[0]->state != TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
            rv = TR_EINVAL;
        }
        tr_msg_free(reply);
    }
    return rv;
}

static void
run_daemon(uint64_t n, lat *l)
{
    bench_daemon d;
    char *extra[] = {"--durability", o_process ? "process" : "full", NULL};
    bench_daemon_start(&d, extra);
    l->create_us = bench_create_probe(d.bd_state, 200);
    tr_client *c = bench_daemon_connect(&d);
    l->ok = true;
    // Does trouped serve Logs? One job, outside the measurement.
    uint64_t id = 0;
    char buf[64];
    size_t got = 0;
    bool eof = false;
    tr_err rv = submit_echo(c, &id);
    if (rv == TR_OK) {
        rv = wait_one(c, id);
    }
    if (rv != TR_OK) {
        l->ok = false;
        snprintf(l->why, sizeof l->why, "the first job: %s (%s)", tr_err_name(rv),
                 tr_client_error());
    } else if ((rv = read_output(c, id, false, buf, sizeof buf, &got, &eof)) == TR_ENOTSUP) {
        snprintf(l->why, sizeof l->why, "Logs: %s (%s): trouped does not serve Logs yet",
                 tr_err_name(rv), tr_client_error());
    } else {
        l->logs = true;
    }
    bool follow = o_follow && l->logs;
    for (uint64_t i = 0; i < n && l->ok; i++) {
        double t0 = bench_now();
        rv = submit_echo(c, &id);
        l->sub_ms[l->n_sub++] = (bench_now() - t0) * 1e3;
        if (rv == TR_OK && !follow) {
            rv = wait_one(c, id);
            l->final_ms[l->n_final++] = (bench_now() - t0) * 1e3;
        }
        if (rv == TR_OK && l->logs) {
            rv = read_output(c, id, follow, buf, sizeof buf, &got, &eof);
            double t1 = bench_now();
            if (rv == TR_OK && !(got == 3 && memcmp(buf, "hi\n", 3) == 0)) {
                l->ok = false;
                snprintf(l->why, sizeof l->why, "job %llu: Logs gave %zu bytes, not \"hi\\n\"",
                         (unsigned long long)id, got);
                break;
            }
            l->out_ms[l->n_out++] = (t1 - t0) * 1e3;
        }
        if (rv != TR_OK) {
            l->ok = false;
            snprintf(l->why, sizeof l->why, "job %llu: %s (%s)", (unsigned long long)id,
                     tr_err_name(rv), tr_client_error());
        }
    }
    tr_client_close(c);
    if (!bench_daemon_stop(&d, 10000) && l->ok) {
        l->ok = false;
        snprintf(l->why, sizeof l->why, "trouped did not exit cleanly within 10 s of SIGTERM");
    }
    bench_daemon_free(&d);
}

static bool
run_bare(uint64_t n, double *ms)
{
    char *argv[] = {"/bin/echo", "hi", NULL};
    for (uint64_t i = 0; i < n; i++) {
        char out[16];
        double t0 = bench_now();
        int st = bench_run_capture(argv, environ, out, sizeof out);
        ms[i] = (bench_now() - t0) * 1e3;
        if (st != 0 || strcmp(out, "hi\n") != 0) {
            return false;
        }
    }
    return true;
}

static size_t
run_tsp(uint64_t n, double *ms, char *why, size_t whylen)
{
    bench_tsp t;
    if (!bench_tsp_start(&t, 1, n + 100, why, whylen)) {
        bench_tsp_stop(&t);
        return 0;
    }
    size_t done = 0;
    for (uint64_t i = 0; i < n; i++) {
        char id[32], out[64];
        double t0 = bench_now();
        char *add[] = {"echo", "hi", NULL};
        int st = bench_tsp_run(&t, add, id, sizeof id);
        id[strcspn(id, "\n")] = '\0';
        char *wait[] = {"-w", id, NULL}, *cat[] = {"-c", id, NULL};
        if (st == 0) {
            st = bench_tsp_run(&t, wait, NULL, 0);
        }
        if (st == 0) {
            st = bench_tsp_run(&t, cat, out, sizeof out);
        }
        double t1 = bench_now();
        if (st != 0 || strcmp(out, "hi\n") != 0) {
            snprintf(why, whylen, "tsp job %s: status %d, output not \"hi\\n\"", id, st);
            break;
        }
        ms[done++] = (t1 - t0) * 1e3;
    }
    bench_tsp_stop(&t);
    return done;
}

static void
emit(const bench_args *a, const char *metric, double value, bool ok, const char *reason,
     const char *target)
{
    char f[768] = "";
    if (reason != NULL && reason[0] != '\0') {
        bench_dfield(f, sizeof f, "reason", reason);
    }
    if (target != NULL) {
        bench_dfield(f, sizeof f, "target", target);
    }
    bench_dline(a, metric, value, "ms", ok, f);
}

int
main(int argc, char **argv)
{
    static const bench_opt opts[] = {
        {"--follow", "Submit then Logs follow=true (no Wait)", NULL, &o_follow},
        {"--process", "trouped --durability process (default full)", NULL, &o_process},
        {"--tsp-n", "task-spooler jobs (default 200)", &o_tsp_n, NULL},
        {"--no-tsp", "skip task-spooler", NULL, &o_no_tsp},
    };
    static const bench_def def = {"daemon_latency", 1000, 0, opts, 4};
    bench_args a = bench_parse(argc, argv, &def);
    if (a.n == 0) {
        fprintf(stderr, "bench_daemon_latency: --n at least 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bench_daemon_env(&a);
    lat l = {.out_ms = calloc(a.n, sizeof(double)),
             .final_ms = calloc(a.n, sizeof(double)),
             .sub_ms = calloc(a.n, sizeof(double))};
    fprintf(stderr, "bench_daemon_latency: trouped, %llu jobs\n", (unsigned long long)a.n);
    bench_dwatch_arm(&a, "trouped");
    run_daemon(a.n, &l);
    fprintf(stderr, "bench_daemon_latency: bare spawn-and-read\n");
    bench_dwatch_arm(&a, "the bare spawn-and-read");
    double *bare = calloc(a.n, sizeof(double));
    bool bare_ok = run_bare(a.n, bare);
    double *tsp = calloc(o_tsp_n + 1, sizeof(double));
    size_t ntsp = 0;
    char tsp_why[256] = "skipped (--no-tsp)";
    if (!o_no_tsp && o_tsp_n > 0) {
        tsp_why[0] = '\0';
        fprintf(stderr, "bench_daemon_latency: task-spooler, %llu jobs\n",
                (unsigned long long)o_tsp_n);
        bench_dwatch_arm(&a, "task-spooler");
        ntsp = run_tsp(o_tsp_n, tsp, tsp_why, sizeof tsp_why);
    }
    bench_dwatch_disarm();

    bool out_ok = l.ok && l.logs && l.n_out == a.n;
    double p50 = out_ok ? bench_quantile(l.out_ms, l.n_out, 0.50) : NAN;
    double p99 = out_ok ? bench_quantile(l.out_ms, l.n_out, 0.99) : NAN;
    char target[96];
    snprintf(target, sizeof target, "p50 <= %.0f ms: %s", TARGET_P50_MS,
             !out_ok                ? "not measured"
             : p50 <= TARGET_P50_MS ? "met"
                                    : "missed");
    char why[512];
    snprintf(why, sizeof why, "%s", l.why);
    emit(&a, o_follow ? "submit_to_output_follow_p50" : "submit_to_output_p50", p50, out_ok, why,
         target);
    emit(&a, o_follow ? "submit_to_output_follow_p99" : "submit_to_output_p99", p99, out_ok, why,
         NULL);
    bool fin_ok = l.n_final == a.n && (l.ok || !l.logs);
    // With --follow the loop skips the Wait, unless Logs is not served.
    if (!o_follow || !l.logs) {
        emit(&a, "submit_to_final_p50", fin_ok ? bench_quantile(l.final_ms, l.n_final, 0.5) : NAN,
             fin_ok, fin_ok ? NULL : l.why, NULL);
        emit(&a, "submit_to_final_p99", fin_ok ? bench_quantile(l.final_ms, l.n_final, 0.99) : NAN,
             fin_ok, fin_ok ? NULL : l.why, NULL);
    }
    bool sub_ok = l.n_sub == a.n && (l.ok || !l.logs);
    emit(&a, "submit_p50", sub_ok ? bench_quantile(l.sub_ms, l.n_sub, 0.5) : NAN, sub_ok,
         sub_ok ? NULL : l.why, NULL);
    emit(&a, "bare_spawn_read_p50", bench_quantile(bare, a.n, 0.5), bare_ok, NULL, NULL);
    emit(&a, "bare_spawn_read_p99", bench_quantile(bare, a.n, 0.99), bare_ok, NULL, NULL);
    bool tsp_ok = ntsp == o_tsp_n && ntsp > 0;
    emit(&a, "tsp_p50", tsp_ok ? bench_quantile(tsp, ntsp, 0.5) : NAN, tsp_ok, tsp_why, NULL);
    emit(&a, "tsp_p99", tsp_ok ? bench_quantile(tsp, ntsp, 0.99) : NAN, tsp_ok, tsp_why, NULL);
    char pf[384] = "";
    bench_dfield(pf, sizeof pf, "note",
                 "creating an empty file in trouped's state dir, measured by the benchmark "
                 "before its jobs: trouped creates two output files per job");
    bench_dline(&a, "file_create_p50", l.create_us * 1e-3, "ms", !isnan(l.create_us), pf);
    free(l.out_ms);
    free(l.final_ms);
    free(l.sub_ms);
    free(bare);
    free(tsp);
    return out_ok && bare_ok ? 0 : 1;
}

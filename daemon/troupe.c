// Design notes.
//
// troupe, the command-line client: one subcommand per request, built on
// troupe/client.h only. Output is one line per job for now; --json is not
// here yet (jansson is not installed: it comes with the table output).
// `troupe run` follows a workload by polling Status of the jobs still
// unfinished every 100 ms and printing a line per job as it ends; the PUB
// socket of job events replaces the polling later.
//
// Exit codes: 0 success (every job succeeded, for wait and run), 1 a job
// failed (or was cancelled, timed out, skipped), 2 bad usage, 3 the daemon
// could not be reached or answered with an error.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <troupe/client.h>

#include "workload.h"

enum { EXIT_JOBFAIL = 1, EXIT_USAGE = 2, EXIT_DAEMON = 3 };

static const char *const state_names[] = {"queued",    "running",   "succeeded", "failed",
                                          "cancelled", "timed_out", "skipped"};

static const char *
state_name(int st)
{
    return st >= 0 && st < 7 ? state_names[st] : "?";
}

static bool
final(int st)
{
    return st >= TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: troupe [--url URL] COMMAND ...\n"
               "  ping                          ask the daemon for its version\n"
               "  submit [--name N] [--group G] [--wait] -- CMD ARGS...\n"
               "                                run a program as a job; prints its id\n"
               "  status ID...                  one line per job\n"
               "  wait ID...                    until every job is final\n"
               "  run FILE                      submit a workload file and follow it\n"
               "URL: --url, else $TROUPE_URL, else the daemon's default socket.\n"
               "Exit status: 0 ok (all jobs succeeded), 1 a job did not succeed,\n"
               "2 bad usage, 3 the daemon could not be reached or refused the request.\n");
}

static int
fail(const char *what, tr_err rv)
{
    const char *d = tr_client_error();
    fprintf(stderr, "troupe: %s: %s%s%s\n", what, tr_err_name(rv), d[0] != '\0' ? ": " : "", d);
    return EXIT_DAEMON;
}

static void
print_job(const Troupe__V1__JobInfo *j)
{
    printf("%llu\t%s\t%s", (unsigned long long)j->id, j->name[0] != '\0' ? j->name : "-",
           state_name(j->state));
    if (final(j->state)) {
        printf("\texit=%d", j->exit_code);
    }
    if (j->error[0] != '\0') {
        printf("\terror=%s", j->error);
    }
    printf("\n");
}

static bool
parse_ids(int argc, char **argv, uint64_t **ids, size_t *n)
{
    *ids = calloc((size_t)argc + 1, sizeof **ids);
    *n = 0;
    for (int i = 0; i < argc; i++) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(argv[i], &end, 10);
        if (errno != 0 || end == argv[i] || *end != '\0' || v == 0) {
            fprintf(stderr, "troupe: %s: not a job id\n", argv[i]);
            return false;
        }
        (*ids)[(*n)++] = v;
    }
    return *n > 0;
}

// wait_all waits for ids and prints them: the exit code.
static int
wait_all(tr_client *c, const uint64_t *ids, size_t n)
{
    tr_msg *reply;
    tr_err rv = tr_client_wait(c, ids, n, 0, &reply, NULL);
    if (rv != TR_OK) {
        return fail("wait", rv);
    }
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    int code = 0;
    for (size_t i = 0; i < jl->n_jobs; i++) {
        print_job(jl->jobs[i]);
        if (jl->jobs[i]->state != TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
            code = EXIT_JOBFAIL;
        }
    }
    tr_msg_free(reply);
    return code;
}

static int
cmd_submit(tr_client *c, int argc, char **argv)
{
    const char *name = "", *grp = "";
    bool wait = false;
    int i = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--wait") == 0) {
            wait = true;
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (strcmp(argv[i], "--group") == 0 && i + 1 < argc) {
            grp = argv[++i];
        } else {
            break;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv + i;
    ex.n_argv = (size_t)(argc - i);
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    js.name = (char *)name;
    js.group = (char *)grp;
    js.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    js.exec = &ex;
    Troupe__V1__JobSpec *jobs[] = {&js};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    b.job_count = 1;
    uint64_t first;
    uint32_t count;
    tr_err rv = tr_client_submit(c, &b, &first, &count);
    if (rv != TR_OK) {
        return fail("submit", rv);
    }
    printf("%llu\n", (unsigned long long)first);
    fflush(stdout);
    return wait ? wait_all(c, &first, 1) : 0;
}

static int
cmd_status(tr_client *c, const uint64_t *ids, size_t n)
{
    tr_msg *reply;
    tr_err rv = tr_client_status(c, ids, n, &reply);
    if (rv != TR_OK) {
        return fail("status", rv);
    }
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    for (size_t i = 0; i < jl->n_jobs; i++) {
        print_job(jl->jobs[i]);
    }
    tr_msg_free(reply);
    return 0;
}

// with_ids parses the ids of status and wait and runs fn on them.
static int
with_ids(tr_client *c, int argc, char **argv, int (*fn)(tr_client *, const uint64_t *, size_t))
{
    uint64_t *ids;
    size_t n;
    int code = parse_ids(argc, argv, &ids, &n) ? fn(c, ids, n) : EXIT_USAGE;
    free(ids);
    return code;
}

static int
cmd_status_ids(tr_client *c, int argc, char **argv)
{
    return with_ids(c, argc, argv, cmd_status);
}

static int
cmd_wait(tr_client *c, int argc, char **argv)
{
    return with_ids(c, argc, argv, wait_all);
}

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "troupe: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n > TRD_WL_MAX_FILE) {
            fprintf(stderr, "troupe: %s: larger than %u bytes\n", path, TRD_WL_MAX_FILE);
            free(buf);
            buf = NULL;
            break;
        }
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
            }
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int
cmd_run(tr_client *c, int argc, char **argv)
{
    if (argc != 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    size_t len;
    char *text = read_file(argv[0], &len);
    if (text == NULL) {
        return EXIT_USAGE;
    }
    tr_msg *bm;
    trd_diag diag;
    tr_err rv = trd_workload_parse(text, len, &bm, &diag);
    free(text);
    if (rv != TR_OK) {
        fprintf(stderr, "%s:%u:%u: %s\n", argv[0], diag.line, diag.column, diag.msg);
        return EXIT_USAGE;
    }
    uint64_t first;
    uint32_t count;
    rv = tr_client_submit(c, tr_msg_body(bm), &first, &count);
    tr_msg_free(bm);
    if (rv != TR_OK) {
        return fail("submit", rv);
    }
    printf("submitted %u jobs: %llu..%llu\n", count, (unsigned long long)first,
           (unsigned long long)(first + count - 1));
    fflush(stdout);
    uint64_t *left = calloc(count, sizeof *left);
    size_t nleft = count;
    for (uint32_t i = 0; i < count; i++) {
        left[i] = first + i;
    }
    int code = 0;
    while (nleft > 0) {
        tr_msg *reply;
        // Status in slices of the daemon's id limit.
        size_t n = nleft < 1000 ? nleft : 1000;
        rv = tr_client_status(c, left, n, &reply);
        if (rv != TR_OK) {
            free(left);
            return fail("status", rv);
        }
        const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
        size_t k = 0;
        for (size_t i = 0; i < jl->n_jobs; i++) {
            if (final(jl->jobs[i]->state)) {
                print_job(jl->jobs[i]);
                if (jl->jobs[i]->state != TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
                    code = EXIT_JOBFAIL;
                }
            } else {
                left[k++] = jl->jobs[i]->id;
            }
        }
        memmove(left + k, left + n, (nleft - n) * sizeof *left);
        nleft = k + (nleft - n);
        fflush(stdout);
        tr_msg_free(reply);
        if (nleft > 0 && k == n) {
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
    }
    free(left);
    printf("%s\n", code == 0 ? "all jobs succeeded" : "some jobs did not succeed");
    return code;
}

static void
default_url(char *buf, size_t n)
{
    const char *xr = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0) {
        snprintf(buf, n, "ipc:///run/troupe/trouped.sock");
    } else if (xr != NULL && xr[0] == '/') {
        snprintf(buf, n, "ipc://%.3000s/troupe/trouped.sock", xr);
    } else {
        snprintf(buf, n, "ipc:///tmp/troupe-%d/trouped.sock", (int)geteuid());
    }
}

int
main(int argc, char **argv)
{
    const char *url = getenv("TROUPE_URL");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
            url = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    char ubuf[4096];
    if (url == NULL || url[0] == '\0') {
        default_url(ubuf, sizeof ubuf);
        url = ubuf;
    }
    const char *cmd = argv[i++];
    int (*fn)(tr_client *, int, char **) = NULL;
    if (strcmp(cmd, "submit") == 0) {
        fn = cmd_submit;
    } else if (strcmp(cmd, "status") == 0) {
        fn = cmd_status_ids;
    } else if (strcmp(cmd, "wait") == 0) {
        fn = cmd_wait;
    } else if (strcmp(cmd, "run") == 0) {
        fn = cmd_run;
    } else if (strcmp(cmd, "ping") != 0) {
        fprintf(stderr, "troupe: unknown command %s\n", cmd);
        usage(stderr);
        return EXIT_USAGE;
    }
    tr_client *c;
    tr_err rv = tr_client_connect(url, &c);
    if (rv != TR_OK) {
        return fail(url, rv);
    }
    int code;
    if (fn == NULL) {
        char ver[64];
        rv = tr_client_ping(c, ver, sizeof ver);
        code = rv == TR_OK ? (printf("trouped %s at %s\n", ver, url), 0) : fail("ping", rv);
    } else {
        code = fn(c, argc - i, argv + i);
    }
    tr_client_close(c);
    return code;
}

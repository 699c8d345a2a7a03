// client_main.c: a program outside the troupe tree that uses the installed
// client library (troupe/client.h, libtroupe-client) against an installed
// trouped: ping, submit a shell job, wait for it, read its output, and
// shut the daemon down. Usage: client_main URL. Exit 0 when all of it
// worked.
#include <stdio.h>
#include <string.h>

#include <troupe/client.h>

static int
fail(const char *what, tr_err rv)
{
    fprintf(stderr, "client_main: %s: %s: %s\n", what, tr_strerror(rv), tr_client_error());
    return 1;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: client_main URL\n");
        return 2;
    }
    tr_client *c;
    tr_err rv = tr_client_connect(argv[1], &c);
    if (rv != TR_OK) {
        return fail("connect", rv);
    }
    char ver[64];
    if ((rv = tr_client_ping(c, ver, sizeof ver)) != TR_OK) {
        return fail("ping", rv);
    }
    char *argv_sh[] = {"sh", "-c", "echo consumed"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv_sh;
    ex.n_argv = 3;
    Troupe__V1__JobSpec spec = TROUPE__V1__JOB_SPEC__INIT;
    spec.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    spec.exec = &ex;
    Troupe__V1__JobSpec *jobs[] = {&spec};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    b.job_count = 1;
    uint64_t id;
    uint32_t n;
    if ((rv = tr_client_submit(c, &b, &id, &n)) != TR_OK) {
        return fail("submit", rv);
    }
    tr_msg *reply;
    if ((rv = tr_client_wait(c, &id, 1, 30000, &reply, NULL)) != TR_OK) {
        return fail("wait", rv);
    }
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    if (jl == NULL || jl->n_jobs != 1 ||
        jl->jobs[0]->state != TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
        fprintf(stderr, "client_main: job %llu did not succeed\n", (unsigned long long)id);
        return 1;
    }
    tr_msg_free(reply);
    if ((rv = tr_client_logs(c, id, 1, 0, 0, false, &reply)) != TR_OK) {
        return fail("logs", rv);
    }
    const Troupe__V1__LogChunk *lc = tr_client_reply_log(reply);
    if (lc == NULL || lc->data.len != 9 || memcmp(lc->data.data, "consumed\n", 9) != 0) {
        fprintf(stderr, "client_main: job %llu's stdout is not \"consumed\\n\"\n",
                (unsigned long long)id);
        return 1;
    }
    tr_msg_free(reply);
    if ((rv = tr_client_shutdown(c, false, 0)) != TR_OK) {
        return fail("shutdown", rv);
    }
    tr_client_close(c);
    printf("client_main: trouped %s ran job %llu\n", ver, (unsigned long long)id);
    return 0;
}

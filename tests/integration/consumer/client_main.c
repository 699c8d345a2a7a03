// client_main.c: a program outside the troupe tree that uses the installed
// client library (troupe/client.h, libtroupe-client) against an installed
// trouped: ping, submit a shell job, wait for it, read its output, and
// shut the daemon down; given a plugin kind, a job of that kind too, whose
// output must be "hello from a plugin\n" (plugin_main.c's). Usage:
// client_main URL [PLUGIN_KIND]. Exit 0 when all of it worked.
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
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: client_main URL [PLUGIN_KIND]\n");
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
    if (argc == 3) {
        Troupe__V1__PluginTask pt = TROUPE__V1__PLUGIN_TASK__INIT;
        pt.kind = argv[2];
        Troupe__V1__JobSpec ps = TROUPE__V1__JOB_SPEC__INIT;
        ps.task_case = TROUPE__V1__JOB_SPEC__TASK_PLUGIN;
        ps.plugin = &pt;
        jobs[0] = &ps;
        uint64_t pid;
        if ((rv = tr_client_submit(c, &b, &pid, &n)) != TR_OK) {
            return fail("submit plugin", rv);
        }
        if ((rv = tr_client_wait(c, &pid, 1, 30000, &reply, NULL)) != TR_OK) {
            return fail("wait plugin", rv);
        }
        jl = tr_client_reply_jobs(reply);
        bool ok = jl != NULL && jl->n_jobs == 1 &&
                  jl->jobs[0]->state == TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED;
        tr_msg_free(reply);
        if (!ok) {
            fprintf(stderr, "client_main: plugin job %llu did not succeed\n",
                    (unsigned long long)pid);
            return 1;
        }
        if ((rv = tr_client_logs(c, pid, 1, 0, 0, false, &reply)) != TR_OK) {
            return fail("logs plugin", rv);
        }
        static const char want[] = "hello from a plugin\n";
        lc = tr_client_reply_log(reply);
        if (lc == NULL || lc->data.len != sizeof want - 1 ||
            memcmp(lc->data.data, want, sizeof want - 1) != 0) {
            fprintf(stderr, "client_main: plugin job %llu's stdout is not the plugin's\n",
                    (unsigned long long)pid);
            return 1;
        }
        tr_msg_free(reply);
        printf("client_main: plugin kind %s ran as job %llu\n", argv[2], (unsigned long long)pid);
    }
    if ((rv = tr_client_shutdown(c, false, 0)) != TR_OK) {
        return fail("shutdown", rv);
    }
    tr_client_close(c);
    printf("client_main: trouped %s ran job %llu\n", ver, (unsigned long long)id);
    return 0;
}

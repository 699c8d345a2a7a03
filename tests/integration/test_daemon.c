#define _GNU_SOURCE
// test_daemon.c: a real trouped in a child process (--ephemeral, a fresh
// ipc socket), driven through troupe/client.h: ping, a batch of an exec job
// and a dependent noop, wait and status, a malformed request answered with
// an error (and the daemon still serving), a second trouped on the same
// state directory refused, and a SIGTERM stop within a deadline.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <troupe/client.h>
#include <troupe/envelope.h>

#ifndef TROUPED_BIN
#error "TROUPED_BIN: the path of trouped"
#endif

extern char **environ;

typedef struct daemon_proc {
    pid_t pid;
    FILE *out;
    char url[256];
    char state_dir[256];
} daemon_proc;

// daemon_spawn starts trouped with args (NULL-terminated, after argv[0]),
// its stdout on a pipe.
static void
daemon_spawn(daemon_proc *p, char *const *args)
{
    int pout[2];
    assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    char *argv[12] = {TROUPED_BIN};
    size_t n = 1;
    for (size_t i = 0; args[i] != NULL && n < 11; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    assert_int_equal(posix_spawn(&p->pid, TROUPED_BIN, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pout[1]);
    p->out = fdopen(pout[0], "r");
    assert_non_null(p->out);
}

static daemon_proc g_d;

static void
start_daemon(void)
{
    step("start trouped");
    snprintf(g_d.url, sizeof g_d.url, "ipc:///tmp/troupe-test-daemon-%d.sock", (int)getpid());
    char *args[] = {"--ephemeral", "--listen", g_d.url, "--durability", "process", NULL};
    daemon_spawn(&g_d, args);
    // The ready line is the event: a blocking read, no sleep.
    char line[512];
    assert_non_null(fgets(line, sizeof line, g_d.out));
    char url[256];
    assert_int_equal(sscanf(line, "TROUPED READY %255s", url), 1);
    assert_string_equal(url, g_d.url);
}

static void
stop_daemon(void)
{
    step("stop trouped");
    assert_int_equal(kill(g_d.pid, SIGTERM), 0);
    int st;
    assert_true(wait_exit(g_d.pid, 20000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    fclose(g_d.out);
}

static void
test_daemon_ping_submit_wait(void **unused)
{
    (void)unused;
    tr_client *c;
    step("connect");
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    char ver[32];
    step("ping");
    assert_int_equal(tr_client_ping(c, ver, sizeof ver), TR_OK);
    assert_string_equal(ver, "0.1.0");

    step("submit");
    char *argv[] = {"/bin/sh", "-c", "echo hi"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 3;
    Troupe__V1__JobSpec a = TROUPE__V1__JOB_SPEC__INIT;
    a.name = "echo";
    a.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    a.exec = &ex;
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    char *after[] = {"echo"};
    Troupe__V1__JobSpec b = TROUPE__V1__JOB_SPEC__INIT;
    b.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    b.noop = &noop;
    b.after_names = after;
    b.n_after_names = 1;
    Troupe__V1__JobSpec *jobs[] = {&a, &b};
    Troupe__V1__SubmitBatch batch = TROUPE__V1__SUBMIT_BATCH__INIT;
    batch.jobs = jobs;
    batch.n_jobs = 2;
    batch.job_count = 2;
    uint64_t first = 0;
    uint32_t count = 0;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_OK);
    assert_int_equal(count, 2);
    assert_true(first >= 1);

    step("wait");
    uint64_t ids[] = {first, first + 1};
    tr_msg *reply;
    bool timed_out = true;
    assert_int_equal(tr_client_wait(c, ids, 2, 30000, &reply, &timed_out), TR_OK);
    assert_false(timed_out);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    assert_non_null(jl);
    assert_int_equal(jl->n_jobs, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(jl->jobs[i]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    }
    tr_msg_free(reply);

    step("status");
    assert_int_equal(tr_client_status(c, ids, 1, &reply), TR_OK);
    jl = tr_client_reply_jobs(reply);
    assert_int_equal(jl->n_jobs, 1);
    assert_int_equal(jl->jobs[0]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    assert_int_equal(jl->jobs[0]->exit_code, 0);
    assert_int_equal(jl->jobs[0]->stdout_bytes, 3);
    assert_string_equal(jl->jobs[0]->name, "echo");
    tr_msg_free(reply);

    step("status of an unknown id");
    uint64_t bogus = first + 1000;
    assert_int_equal(tr_client_status(c, &bogus, 1, &reply), TR_ENOTFOUND);
    assert_non_null(strstr(tr_client_error(), "no such job"));

    step("a batch whose count is wrong");
    batch.job_count = 3;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_EINVAL);
    assert_non_null(strstr(tr_client_error(), "states 3 jobs but holds 2"));
    tr_client_close(c);
}

static void
test_daemon_malformed_request(void **unused)
{
    (void)unused;
    step("raw REQ");
    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 0), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000), 0);
    assert_int_equal(nng_dial(s, g_d.url, NULL, 0), 0);
    static const char garbage[] = "\xff\xff\xff\xff not an envelope";
    assert_int_equal(nng_send(s, (void *)garbage, sizeof garbage - 1, 0), 0);
    nng_msg *nm;
    assert_int_equal(nng_recvmsg(s, &nm, 0), 0);
    tr_msg *in;
    assert_int_equal(tr_msg_unpack(nng_msg_body(nm), nng_msg_len(nm), NULL, &in, NULL), TR_OK);
    nng_msg_free(nm);
    assert_true(tr_msg_is(in, &troupe__v1__control_reply__descriptor));
    const Troupe__V1__ControlReply *rep = tr_msg_body(in);
    assert_int_equal(rep->reply_case, TROUPE__V1__CONTROL_REPLY__REPLY_ERROR);
    assert_int_equal(rep->error->code, TR_EINVAL);
    assert_string_equal(rep->error->name, "TR_EINVAL");
    assert_non_null(strstr(rep->error->detail, "malformed"));
    tr_msg_free(in);
    nng_close(s);

    step("ping after garbage");
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    assert_int_equal(tr_client_ping(c, NULL, 0), TR_OK);
    tr_client_close(c);
}

static void
test_daemon_second_instance_refused(void **unused)
{
    (void)unused;
    step("second trouped");
    // The first one's state directory, from /proc: its lock file names it.
    char lnk[64], dir[256] = "";
    for (int fd = 0; fd < 64 && dir[0] == '\0'; fd++) {
        snprintf(lnk, sizeof lnk, "/proc/%d/fd/%d", (int)g_d.pid, fd);
        char tgt[256];
        ssize_t n = readlink(lnk, tgt, sizeof tgt - 1);
        if (n > 5) {
            tgt[n] = '\0';
            if (strcmp(tgt + n - 5, "/lock") == 0) {
                tgt[n - 5] = '\0';
                snprintf(dir, sizeof dir, "%s", tgt);
            }
        }
    }
    assert_true(dir[0] != '\0');
    char url[256];
    snprintf(url, sizeof url, "ipc:///tmp/troupe-test-daemon-%d-2.sock", (int)getpid());
    char *args[] = {"--state-dir", dir, "--listen", url, NULL};
    daemon_proc p2;
    daemon_spawn(&p2, args);
    int st;
    assert_true(wait_exit(p2.pid, 20000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    char line[256];
    assert_null(fgets(line, sizeof line, p2.out)); // never ready
    fclose(p2.out);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    start_daemon();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_ping_submit_wait),
        cmocka_unit_test(test_daemon_malformed_request),
        cmocka_unit_test(test_daemon_second_instance_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    stop_daemon();
    step("nng_fini");
    nng_fini();
    alarm(0);
    return rc;
}

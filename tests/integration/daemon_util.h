// daemon_util.h: what the tests that run a real trouped in a child process
// share: starting it (its stdout on a pipe, for the ready line; its
// stderr too when asked), reading its ready line, stopping it with
// SIGTERM within a deadline, and subscribing to its job events and
// reading them off the SUB socket.
// Static functions of one test executable each; include after cmocka and
// child_util.h, with TROUPED_BIN (the binary's path) defined.
#ifndef TR_DAEMON_UTIL_H
#define TR_DAEMON_UTIL_H

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <troupe/client.h>
#include <troupe/envelope.h>
#include <troupe/v1/control.pb-c.h>

#ifndef TROUPED_BIN
#error "TROUPED_BIN: the path of trouped"
#endif

extern char **environ;

typedef struct daemon_proc {
    pid_t pid;
    FILE *out; // its stdout: the ready line
    int errfd; // its stderr, when captured; else -1 (it writes the test's)
    char url[256];
} daemon_proc;

// Where a spawned trouped's stderr goes.
enum { DAEMON_ERR_TEST, DAEMON_ERR_PIPE, DAEMON_ERR_STDOUT };

// daemon_spawn_full starts trouped with args (NULL-terminated, after
// argv[0], at most 15) and the environment envp, its stdout on a pipe
// (p->out), its stderr the test's (DAEMON_ERR_TEST), on a pipe of its own
// (DAEMON_ERR_PIPE: p->errfd) or on the stdout pipe (DAEMON_ERR_STDOUT).
// A captured stderr is only for a trouped that stops at once, since nobody
// reads the pipe while it runs and its log lines would fill it.
static void __attribute__((unused))
daemon_spawn_full(daemon_proc *p, char *const *args, char *const *envp, int err)
{
    int pout[2], perr[2] = {-1, -1};
    assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    if (err == DAEMON_ERR_PIPE) {
        assert_int_equal(pipe2(perr, O_CLOEXEC), 0);
        posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
    } else if (err == DAEMON_ERR_STDOUT) {
        posix_spawn_file_actions_adddup2(&fa, pout[1], 2);
    }
    char *argv[16] = {TROUPED_BIN};
    size_t n = 1;
    for (size_t i = 0; args[i] != NULL; i++) {
        assert_true(n < 15);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    assert_int_equal(posix_spawn(&p->pid, TROUPED_BIN, &fa, NULL, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pout[1]);
    p->out = fdopen(pout[0], "r");
    assert_non_null(p->out);
    p->errfd = perr[0];
    if (perr[1] >= 0) {
        close(perr[1]);
    }
}

// daemon_spawn_io: daemon_spawn_full with this process's environment, the
// stderr on a pipe of its own when capture_err.
static void __attribute__((unused))
daemon_spawn_io(daemon_proc *p, char *const *args, bool capture_err)
{
    daemon_spawn_full(p, args, environ, capture_err ? DAEMON_ERR_PIPE : DAEMON_ERR_TEST);
}

// daemon_spawn_env: daemon_spawn_full with the environment envp, the
// stderr on the stdout pipe with both (the test reads trouped's whole say
// from p->out).
static void __attribute__((unused))
daemon_spawn_env(daemon_proc *p, char *const *args, char *const *envp, bool both)
{
    daemon_spawn_full(p, args, envp, both ? DAEMON_ERR_STDOUT : DAEMON_ERR_TEST);
}

// daemon_spawn is daemon_spawn_io with the test's stderr.
static void __attribute__((unused)) daemon_spawn(daemon_proc *p, char *const *args)
{
    daemon_spawn_io(p, args, false);
}

// daemon_ready reads p's ready line (a blocking read: the line is the
// event, no sleep), which must name p->url.
static void __attribute__((unused)) daemon_ready(daemon_proc *p)
{
    char line[512], url[256];
    assert_non_null(fgets(line, sizeof line, p->out));
    assert_int_equal(sscanf(line, "TROUPED READY %255s", url), 1);
    assert_string_equal(url, p->url);
}

// daemon_stop stops p with SIGTERM, which must end it with status 0
// within 20 s.
static void __attribute__((unused)) daemon_stop(daemon_proc *p)
{
    assert_int_equal(kill(p->pid, SIGTERM), 0);
    int st;
    assert_true(wait_exit(p->pid, 20000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    fclose(p->out);
    if (p->errfd >= 0) {
        close(p->errfd);
    }
}

// daemon_refused waits (30 s at most) for p, which must refuse to start:
// exit status 1, never a ready line. Its stderr, if captured, is left to
// the caller.
static void __attribute__((unused)) daemon_refused(daemon_proc *p)
{
    char line[256];
    assert_null(fgets(line, sizeof line, p->out)); // never ready
    int st;
    assert_true(wait_exit(p->pid, 30000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    fclose(p->out);
}

// next_event receives the next event of job id (others are skipped), up
// to ms, from sub (subscribed to the daemon's events): its body in a
// tr_msg, or NULL when none came in time.
static tr_msg *__attribute__((unused)) next_event(nng_socket sub, uint64_t id, int ms)
{
    nng_socket_set_ms(sub, NNG_OPT_RECVTIMEO, ms);
    for (;;) {
        nng_msg *nm;
        if (nng_recvmsg(sub, &nm, 0) != 0) {
            return NULL;
        }
        const uint8_t *p = nng_msg_body(nm);
        assert_true(nng_msg_len(nm) > 8);
        uint64_t got = 0;
        for (int i = 0; i < 8; i++) {
            got = got << 8 | p[i];
        }
        tr_msg *ev = NULL;
        tr_unpack_info info;
        assert_int_equal(tr_msg_unpack(p + 8, nng_msg_len(nm) - 8, NULL, &ev, &info), TR_OK);
        nng_msg_free(nm);
        assert_true(tr_msg_is(ev, &troupe__v1__job_event__descriptor));
        assert_int_equal(((const Troupe__V1__JobEvent *)tr_msg_body(ev))->id, got);
        if (got == id) {
            return ev;
        }
        tr_msg_free(ev);
    }
}

// events_subscribe asks the daemon (through c) where its PUB socket is (in
// url, n bytes), subscribes to every job's events there, and returns once
// they flow: the daemon's side of the pipe may come up a little after
// ours, so it submits noop jobs until one's event arrives (each wait
// bounded). The caller closes the socket.
static nng_socket __attribute__((unused)) events_subscribe(tr_client *c, char *url, size_t n)
{
    tr_msg *reply;
    assert_int_equal(tr_client_pong(c, &reply), TR_OK);
    const Troupe__V1__Pong *pong = tr_client_reply_pong(reply);
    assert_non_null(pong);
    snprintf(url, n, "%s", pong->events_url);
    tr_msg_free(reply);
    nng_socket sub;
    assert_int_equal(nng_sub0_open(&sub), 0);
    assert_int_equal(nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "", 0), 0);
    assert_int_equal(nng_dial(sub, url, NULL, 0), 0);
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    Troupe__V1__JobSpec o = TROUPE__V1__JOB_SPEC__INIT;
    o.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    o.noop = &noop;
    Troupe__V1__JobSpec *jobs[] = {&o};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    b.job_count = 1;
    bool live = false;
    for (int i = 0; i < 100 && !live; i++) {
        uint64_t id = 0;
        uint32_t count = 0;
        assert_int_equal(tr_client_submit(c, &b, &id, &count), TR_OK);
        tr_msg *ev = next_event(sub, id, 1000);
        live = ev != NULL;
        tr_msg_free(ev);
    }
    assert_true(live);
    return sub;
}

#endif

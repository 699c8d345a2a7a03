#define _GNU_SOURCE
// test_node.c: two processes, two nodes (troupe/node.h). This process runs
// a runtime and a node; the peer is the troupe-node example in its own
// process. Calls, whereis, remote monitors, the remote executor, hostile
// input on the peer's listener, and a peer that dies or stops.
#include "actors/actor_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_util.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <troupe/envelope.h>
#include <troupe/executor.h>
#include <troupe/node.h>
#include <troupe/v1/node.pb-c.h>

#ifndef TROUPE_NODE_BIN
#error "TROUPE_NODE_BIN: the path of the troupe-node example"
#endif

extern char **environ;

typedef struct peerproc {
    pid_t pid;
    int in; // its standard input: closing it stops the peer
    FILE *out;
    uint64_t id;
    char url[256];
} peerproc;

static int g_seq;
static char g_self[] = "/proc/self/exe"; // this program, for its --hostile mode

// How long a silent peer counts as alive. Generous, so that a loaded
// machine's scheduling pauses are not taken for a dead peer; the SIGSTOP
// case lowers it (and waits for the event with a deadline above it).
static const char *g_dead_after = "8000";
static uint32_t g_dead_after_ms = 8000;
static uint32_t g_sendbuf; // this process's node's link buffers; 0: the default

// peer_start starts troupe-node listening on listen (NULL: a fresh ipc
// path) with up to 6 more arguments (a NULL-terminated list, or NULL).
static void
peer_start_on(peerproc *p, const char *listen, const char *const *extra)
{
    step("peer_start");
    char url[128];
    if (listen == NULL) {
        snprintf(url, sizeof url, "ipc:///tmp/troupe-test-node-%d-%d.sock", (int)getpid(), g_seq++);
        listen = url;
    }
    int pin[2], pout[2];
    assert_int_equal(pipe2(pin, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    char *argv[16] = {TROUPE_NODE_BIN,      "--listen",    (char *)listen, "--dead-after",
                      (char *)g_dead_after, "--heartbeat", "100"};
    size_t argc = 7;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && argc < 14; i++) {
        argv[argc++] = (char *)extra[i];
    }
    argv[argc] = NULL;
    assert_int_equal(posix_spawn(&p->pid, TROUPE_NODE_BIN, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pin[0]);
    close(pout[1]);
    p->in = pin[1];
    p->out = fdopen(pout[0], "r");
    assert_non_null(p->out);
    unsigned long long id = 0;
    // The peer prints its line once it listens (a blocking read: the
    // peer's start is the event).
    assert_int_equal(fscanf(p->out, "NODE %llu %255s", &id, p->url), 2);
    p->id = id;
}

static void
peer_start(peerproc *p, const char *extra1, const char *extra2)
{
    const char *extra[] = {extra1, extra2, NULL};
    peer_start_on(p, NULL, extra);
}

// peer_wait waits, with a deadline, for the peer to exit (after its stdin
// closed, or a Shutdown); a peer that does not is killed and the test
// fails. It returns the wait status.
static int
peer_wait(peerproc *p, const char *why)
{
    int st;
    bool exited = wait_exit(p->pid, 3 * TU_WAIT_MS, &st);
    close(p->in);
    fclose(p->out);
    if (!exited) {
        fail_msg("the peer did not stop within %d ms of %s", 3 * TU_WAIT_MS, why);
    }
    return st;
}

// peer_stop closes the peer's standard input and waits for it to exit.
static int
peer_stop(peerproc *p)
{
    step("peer_stop");
    close(p->in);
    p->in = -1;
    return peer_wait(p, "its stdin closing");
}

static tr_node *
node_start(tr_rt *rt)
{
    char url[128];
    snprintf(url, sizeof url, "ipc:///tmp/troupe-test-self-%d-%d.sock", (int)getpid(), g_seq++);
    tr_node_opts o = {
        .listen = url, .heartbeat_ms = 100, .dead_after_ms = g_dead_after_ms, .sendbuf = g_sendbuf};
    tr_node *n = NULL;
    assert_int_equal(tr_node_start(rt, &o, &n), TR_OK);
    return n;
}

// ---------------------------------------------------------------------------
// A task that calls n times and records the outcome.

typedef struct rcaller {
    int tr_pc;
    tr_actor_addr to;
    uint64_t n, i, ok, timeout_ns;
    uint64_t tag, val; // when tag is set: every request is num_msg(tag, val)
    tr_actor_op op;
    tr_msg *req, *reply;
    tr_err err, last;
} rcaller;

static tr_poll
rcaller_poll(void *arg, tr_cx *cx)
{
    rcaller *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        st->req = st->tag != 0 ? num_msg(st->tag, st->val) : num_msg(5, st->i);
        TR_AWAIT(st,
                 tr_actor_call(st->to, cx, &st->op, st->req, st->timeout_ns, &st->reply, &st->err));
        st->last = st->err;
        if (st->err != TR_OK) {
            break;
        }
        const Troupe__V1__Address *a = num_of(st->reply);
        if (a != NULL && a->actor == st->i + 1) {
            st->ok++;
        }
        tr_msg_free(st->reply);
    }
    tr_cx_set_result_u64(cx, st->ok | ((uint64_t)st->last << 48));
    TR_END(st);
}

static void
rcaller_drop(void *arg)
{
    tr_actor_op_abandon(&((rcaller *)arg)->op);
}

static const tr_task_spec rcaller_spec = {"rcaller", rcaller_poll, rcaller_drop, sizeof(rcaller)};

// call_start starts a task that makes n calls; call_finish waits for it
// and returns how many came back right, and *last the error of the last.
static void
call_start(tr_rt *rt, tr_actor_addr to, uint64_t n, uint64_t timeout_ns, uint64_t tag, uint64_t val,
           tr_join *j)
{
    rcaller init = {.to = to, .n = n, .timeout_ns = timeout_ns, .tag = tag, .val = val};
    assert_int_equal(tr_spawn(rt, &rcaller_spec, NULL, &init, j), TR_OK);
}

static uint64_t
call_finish(tr_join *j, tr_err *last)
{
    tr_outcome out;
    if (tr_join_wait_timeout(j, &out, (uint64_t)TU_WAIT_MS * 1000000u) != TR_OK) {
        fail_msg("calls still running after %d ms, in step %s", TU_WAIT_MS, g_step);
    }
    *last = (tr_err)(out.value.u64 >> 48);
    return out.value.u64 & (((uint64_t)1 << 48) - 1);
}

// call_n returns how many of n calls came back right, and *last the error
// of the last one.
static uint64_t
call_tagged(tr_rt *rt, tr_actor_addr to, uint64_t n, uint64_t timeout_ns, uint64_t tag,
            uint64_t val, tr_err *last)
{
    tr_join j;
    call_start(rt, to, n, timeout_ns, tag, val, &j);
    return call_finish(&j, last);
}

static uint64_t
call_n(tr_rt *rt, tr_actor_addr to, uint64_t n, uint64_t timeout_ns, tr_err *last)
{
    return call_tagged(rt, to, n, timeout_ns, 0, 0, last);
}

// ---------------------------------------------------------------------------
// A recorder of Downs and executor replies.

typedef struct sink {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    unsigned downs, spawned, results, errors, link_stops, dones, statuses;
    tr_err down_reason, error_code, link_reason, result_error;
    uint64_t result, task_id, running;
} sink;

static void
sink_init(sink *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    tu_cond_init(&s->cv);
}

static bool
sink_wait(sink *s, unsigned *field, unsigned n)
{
    struct timespec dl = tu_abstime(TU_WAIT_MS);
    pthread_mutex_lock(&s->lock);
    while (*field < n && pthread_cond_timedwait(&s->cv, &s->lock, &dl) == 0) {
    }
    bool ok = *field >= n;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static tr_err
sink_actor_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(sink **)state = arg;
    return TR_OK;
}

static void
sink_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    sink *s = *(sink **)state;
    pthread_mutex_lock(&s->lock);
    if (tr_msg_is(m, &troupe__v1__down__descriptor)) {
        s->downs++;
        s->down_reason = tr_msg_reason_err(((Troupe__V1__Down *)tr_msg_body(m))->reason);
    } else if (tr_msg_is(m, &troupe__v1__executor_reply__descriptor)) {
        const Troupe__V1__ExecutorReply *r = tr_msg_body(m);
        if (r->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED) {
            s->spawned++;
            s->task_id = r->spawned->task_id;
        } else if (r->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE) {
            s->dones++;
        } else if (r->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_STATUS) {
            s->statuses++;
            s->running = r->status->live_tasks;
        } else if (r->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT) {
            const Troupe__V1__TaskResult *t = r->result;
            s->result_error = (tr_err)t->error;
            uint64_t v = 0;
            for (size_t i = 0; i < t->result.len && i < 8; i++) {
                v |= (uint64_t)t->result.data[i] << (8 * i);
            }
            s->result = v;
            s->results++;
        } else if (r->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_ERROR) {
            s->errors++;
            s->error_code = (tr_err)r->error->code;
        }
    } else if (tr_msg_is(m, &troupe__v1__node_error__descriptor)) {
        s->errors++;
        s->error_code = (tr_err)((Troupe__V1__NodeError *)tr_msg_body(m))->code;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
}

// A local actor linked to a remote one from its init; its stop is recorded.
typedef struct linkee {
    sink *s;
    tr_actor_addr peer;
} linkee;

static tr_err
linkee_init(tr_actor *self, void *state, void *arg)
{
    *(linkee *)state = *(linkee *)arg;
    return tr_actor_link(self, ((linkee *)arg)->peer);
}

static void
linkee_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    (void)state;
    (void)m;
}

static void
linkee_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    sink *s = ((linkee *)state)->s;
    pthread_mutex_lock(&s->lock);
    s->link_stops++;
    s->link_reason = reason;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
}

static const tr_actor_spec linkee_spec = {.name = "linkee",
                                          .size = sizeof(linkee),
                                          .init = linkee_init,
                                          .receive = linkee_receive,
                                          .stopped = linkee_stopped};

static const tr_actor_spec sink_spec = {
    .name = "sink", .size = sizeof(sink *), .init = sink_actor_init, .receive = sink_receive};

// sink_spawn starts a sink actor recording into s, and returns its address.
static tr_actor_addr
sink_spawn(tr_rt *rt, sink *s)
{
    sink_init(s);
    tr_actor_addr me;
    assert_int_equal(tr_actor_spawn(rt, &sink_spec, s, NULL, &me), TR_OK);
    return me;
}

// ---------------------------------------------------------------------------

// A test's two sides: the peer process, this process's runtime and node,
// linked.
typedef struct fix {
    peerproc p;
    bg b;
    tr_node *n;
    uint64_t peer;
} fix;

static void
fix_up(fix *f, const char *extra1, const char *extra2)
{
    peer_start(&f->p, extra1, extra2);
    step("bg_start and the test's calls");
    bg_start(&f->b, 2);
    f->n = node_start(f->b.rt);
    f->peer = 0;
    assert_int_equal(tr_node_connect(f->n, f->p.url, TU_WAIT_MS, &f->peer), TR_OK);
}

static void
fix_down(fix *f)
{
    step("tr_node_stop");
    assert_int_equal(tr_node_stop(f->n), TR_OK);
    step("bg_stop");
    bg_stop(&f->b);
    assert_int_equal(peer_stop(&f->p), 0);
}

static void
test_node_call_whereis_and_monitor(void **state)
{
    (void)state;
    fix f;
    fix_up(&f, NULL, NULL);
    tr_node *n = f.n;
    uint64_t peer = f.peer;
    assert_int_equal(peer, f.p.id);
    assert_true(tr_node_peer_up(n, peer));
    // Connecting again is the same link.
    uint64_t again = 0;
    assert_int_equal(tr_node_connect(n, f.p.url, TU_WAIT_MS, &again), TR_OK);
    assert_int_equal(again, peer);

    tr_actor_addr echo, nobody;
    assert_int_equal(tr_node_whereis(n, peer, "echo", TU_WAIT_MS, &echo), TR_OK);
    assert_int_equal(echo.node, peer);
    assert_int_equal(tr_node_whereis(n, peer, "nobody", TU_WAIT_MS, &nobody), TR_ENOTFOUND);

    tr_err last;
    assert_int_equal(call_n(f.b.rt, echo, 500, 0, &last), 500);
    assert_int_equal(last, TR_OK);

    // A call to an actor the peer does not have: its node answers.
    tr_actor_addr ghost = {peer, 123456789};
    assert_int_equal(call_n(f.b.rt, ghost, 1, 0, &last), 0);
    assert_int_equal(last, TR_ENOTFOUND);
    // A node nobody knows.
    tr_actor_addr far = {peer ^ 1, echo.actor};
    assert_int_equal(call_n(f.b.rt, far, 1, 0, &last), 0);
    assert_int_equal(last, TR_ENOTFOUND);

    // A monitor of a remote actor: the Down carries its reason.
    sink s;
    tr_actor_addr me = sink_spawn(f.b.rt, &s);
    tr_actor_addr stopper;
    assert_int_equal(tr_node_whereis(n, peer, "stopper", TU_WAIT_MS, &stopper), TR_OK);
    assert_int_equal(tr_actor_monitor(me, stopper, NULL), TR_OK);
    // And a local actor linked to it: the remote stop takes it along.
    linkee li = {&s, stopper};
    assert_int_equal(tr_actor_spawn(f.b.rt, &linkee_spec, &li, NULL, NULL), TR_OK);
    tr_msg *m = num_msg(99, TR_EIO);
    assert_int_equal(tr_actor_send(NULL, stopper, m), TR_OK);
    assert_true(sink_wait(&s, &s.downs, 1));
    assert_int_equal(s.down_reason, TR_EIO);
    assert_true(sink_wait(&s, &s.link_stops, 1));
    assert_int_equal(s.link_reason, TR_EIO);

    // A call whose remote callee stops without answering fails at once,
    // with the callee's reason (no timeout is set: it would hang otherwise).
    tr_actor_addr stopper2;
    assert_int_equal(tr_node_whereis(n, peer, "stopper2", TU_WAIT_MS, &stopper2), TR_OK);
    assert_int_equal(call_tagged(f.b.rt, stopper2, 1, 0, 99, TR_EPIPE, &last), 0);
    assert_int_equal(last, TR_EPIPE);

    tr_node_stats st;
    tr_node_stats_get(n, &st);
    assert_true(st.sent >= 500);
    assert_true(st.received >= 500);
    fix_down(&f);
}

static void
put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void
send_spawn(tr_actor_addr exec, tr_actor_addr reply_to, const char *kind, uint64_t corr)
{
    Troupe__V1__ExecutorCommand *c;
    tr_msg *m = tr_msg_new(&troupe__v1__executor_command__descriptor, 256, (void **)&c);
    Troupe__V1__Spawn *sp = tr_msg_arena(m, sizeof *sp);
    troupe__v1__spawn__init(sp);
    Troupe__V1__TaskSpec *ts = tr_msg_arena(m, sizeof *ts);
    troupe__v1__task_spec__init(ts);
    ts->kind = tr_msg_strdup(m, kind);
    uint8_t args[16];
    put_le64(args, 40);
    put_le64(args + 8, 2);
    ts->args.data = tr_msg_memdup(m, args, 16);
    ts->args.len = 16;
    sp->task_case = TROUPE__V1__SPAWN__TASK_SPEC;
    sp->spec = ts;
    sp->want_result = true;
    c->command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
    c->spawn = sp;
    c->correlation_id = corr;
    tr_msg_set_reply_to(m, reply_to);
    assert_int_equal(tr_actor_send(NULL, exec, m), TR_OK);
}

// send_cmd sends the executor a command other than Spawn: a Cancel of
// task_id, a StatusRequest or an immediate Shutdown.
static void
send_cmd(tr_actor_addr exec, tr_actor_addr reply_to, Troupe__V1__ExecutorCommand__CommandCase which,
         uint64_t task_id, uint64_t corr)
{
    Troupe__V1__ExecutorCommand *c;
    tr_msg *m = tr_msg_new(&troupe__v1__executor_command__descriptor, 256, (void **)&c);
    c->command_case = which;
    c->correlation_id = corr;
    if (which == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL) {
        c->cancel = tr_msg_arena(m, sizeof *c->cancel);
        troupe__v1__cancel__init(c->cancel);
        c->cancel->task_id = task_id;
    } else if (which == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS) {
        c->status = tr_msg_arena(m, sizeof *c->status);
        troupe__v1__status_request__init(c->status);
    } else {
        c->shutdown = tr_msg_arena(m, sizeof *c->shutdown);
        troupe__v1__shutdown__init(c->shutdown);
        c->shutdown->mode = TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE;
    }
    tr_msg_set_reply_to(m, reply_to);
    assert_int_equal(tr_actor_send(NULL, exec, m), TR_OK);
}

static void
test_node_remote_executor(void **state)
{
    (void)state;
    fix f;
    fix_up(&f, NULL, NULL);
    sink s;
    tr_actor_addr me = sink_spawn(f.b.rt, &s);
    tr_actor_addr exec = {f.peer, TR_NODE_EXECUTOR};
    // A remote-spawnable kind: Spawned, then the encoded result.
    send_spawn(exec, me, "troupe.add", 7);
    assert_true(sink_wait(&s, &s.results, 1));
    assert_int_equal(s.spawned, 1);
    assert_int_equal(s.result, 42);
    // A kind that is not: refused.
    send_spawn(exec, me, "troupe.local", 8);
    assert_true(sink_wait(&s, &s.errors, 1));
    assert_int_equal(s.error_code, TR_EPERM);
    // A kind that does not exist: the executor's own error.
    send_spawn(exec, me, "troupe.nothing", 9);
    assert_true(sink_wait(&s, &s.errors, 2));
    assert_int_equal(s.results, 1);
    // This peer was not started with --serve-shutdown: it refuses a
    // Shutdown and serves on.
    send_cmd(exec, me, TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN, 0, 10);
    assert_true(sink_wait(&s, &s.errors, 3));
    assert_int_equal(s.error_code, TR_EPERM);
    send_spawn(exec, me, "troupe.add", 11);
    assert_true(sink_wait(&s, &s.results, 2));
    assert_int_equal(s.result, 42);
    fix_down(&f);
}

// Cancel of a running remote task, StatusRequest, and Shutdown: refused
// by a peer that does not serve it, carried out by one that does.
static void
test_node_remote_cancel_status_shutdown(void **state)
{
    (void)state;
    fix f;
    fix_up(&f, "--serve-shutdown", NULL);
    sink s;
    tr_actor_addr me = sink_spawn(f.b.rt, &s);
    tr_actor_addr exec = {f.peer, TR_NODE_EXECUTOR};
    // A task that runs until cancelled.
    send_spawn(exec, me, "troupe.wait", 21);
    assert_true(sink_wait(&s, &s.spawned, 1));
    uint64_t task = s.task_id;
    assert_true(task != 0);
    send_cmd(exec, me, TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS, 0, 22);
    assert_true(sink_wait(&s, &s.statuses, 1));
    assert_true(s.running >= 1);
    assert_int_equal(s.results, 0);
    // Cancel it: Done, then its result, the cancellation.
    send_cmd(exec, me, TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL, task, 23);
    assert_true(sink_wait(&s, &s.dones, 1));
    assert_true(sink_wait(&s, &s.results, 1));
    assert_int_equal(s.result_error, TR_ECANCELED);
    // A second Cancel of the same task: it is gone.
    send_cmd(exec, me, TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL, task, 24);
    assert_true(sink_wait(&s, &s.errors, 1));
    assert_int_equal(s.error_code, TR_ENOTFOUND);
    // Shutdown: the peer's process ends on its own (stdin stays open), and
    // a monitor of one of its actors gets a Down.
    tr_actor_addr echo;
    assert_int_equal(tr_node_whereis(f.n, f.peer, "echo", TU_WAIT_MS, &echo), TR_OK);
    assert_int_equal(tr_actor_monitor(me, echo, NULL), TR_OK);
    send_spawn(exec, me, "troupe.wait", 25); // running when the Shutdown comes
    assert_true(sink_wait(&s, &s.spawned, 2));
    step("remote Shutdown");
    send_cmd(exec, me, TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN, 0, 26);
    int st = peer_wait(&f.p, "a Shutdown");
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    // The Down says the peer's runtime shut down when the echo's stop
    // crossed the link before it went away, or that the link is gone.
    assert_true(sink_wait(&s, &s.downs, 1));
    assert_true(s.down_reason == TR_ESHUTDOWN || s.down_reason == TR_ENOTCONN);
    step("tr_node_stop");
    assert_int_equal(tr_node_stop(f.n), TR_OK);
    step("bg_stop");
    bg_stop(&f.b);
}

static void
test_node_hostile_input(void **state)
{
    (void)state;
    peerproc p;
    peer_start(&p, "--recv-max", "65536");
    // Raw PUSH sockets send garbage (no Hello first), then something over
    // the limit: the peer drops those links and serves on. They live in a
    // process of their own (this program, with --hostile), which exits
    // without closing them: the peer cutting a pipe mid-send can leave nng
    // 1.5.2's reaper stuck for good (nng #1543), and a process with a stuck
    // reaper hangs at its next nng_close (seen here under ASan and TSan).
    step("hostile sends");
    pid_t hp;
    char *hargv[] = {g_self, "--hostile", p.url, NULL};
    assert_int_equal(posix_spawn(&hp, g_self, NULL, NULL, hargv, environ), 0);
    int hst;
    assert_true(wait_exit(hp, 3 * TU_WAIT_MS, &hst));
    assert_true(WIFEXITED(hst));
    assert_int_equal(WEXITSTATUS(hst), 0);

    bg b;
    step("bg_start and the test's calls");
    bg_start(&b, 2);
    tr_node *n = node_start(b.rt);
    uint64_t peer = 0;
    assert_int_equal(tr_node_connect(n, p.url, TU_WAIT_MS, &peer), TR_OK);
    tr_actor_addr echo;
    assert_int_equal(tr_node_whereis(n, peer, "echo", TU_WAIT_MS, &echo), TR_OK);
    tr_err last;
    assert_int_equal(call_n(b.rt, echo, 50, 0, &last), 50);
    step("tr_node_stop");
    tr_node_stop(n);
    step("bg_stop");
    bg_stop(&b);
    assert_int_equal(peer_stop(&p), 0);
}

static void
test_node_token(void **state)
{
    (void)state;
    peerproc p;
    peer_start(&p, "--token", "s3cret");
    bg b;
    step("bg_start and the test's calls");
    bg_start(&b, 2);
    tr_node *n = node_start(b.rt); // presents no token
    uint64_t peer = 0;
    assert_int_equal(tr_node_connect(n, p.url, 300, &peer), TR_ETIMEDOUT);
    assert_false(tr_node_peer_up(n, p.id));
    step("tr_node_stop");
    tr_node_stop(n);
    step("bg_stop");
    bg_stop(&b);
    assert_int_equal(peer_stop(&p), 0);
}

static void
peer_dies(bool stop_it)
{
    fix f;
    fix_up(&f, NULL, NULL);
    tr_node *n = f.n;
    uint64_t peer = f.peer;
    tr_actor_addr echo;
    assert_int_equal(tr_node_whereis(n, peer, "echo", TU_WAIT_MS, &echo), TR_OK);
    sink s;
    tr_actor_addr me = sink_spawn(f.b.rt, &s);
    assert_int_equal(tr_actor_monitor(me, echo, NULL), TR_OK);
    linkee li = {&s, echo};
    assert_int_equal(tr_actor_spawn(f.b.rt, &linkee_spec, &li, NULL, NULL), TR_OK);
    tr_err last;
    assert_int_equal(call_n(f.b.rt, echo, 10, 0, &last), 10);
    // SIGSTOP: only the heartbeats can tell (the pipe stays open).
    // SIGKILL: the pipe closes.
    kill(f.p.pid, stop_it ? SIGSTOP : SIGKILL);
    assert_true(sink_wait(&s, &s.downs, 1));
    assert_int_equal(s.down_reason, TR_ENOTCONN);
    assert_true(sink_wait(&s, &s.link_stops, 1));
    assert_int_equal(s.link_reason, TR_ENOTCONN);
    assert_false(tr_node_peer_up(n, peer));
    assert_int_equal(call_n(f.b.rt, echo, 1, 0, &last), 0);
    assert_int_equal(last, TR_ENOTFOUND);
    tr_node_stats st;
    tr_node_stats_get(n, &st);
    assert_int_equal(st.peers_down, 1);
    step("tr_node_stop");
    tr_node_stop(n);
    step("bg_stop");
    bg_stop(&f.b);
    if (stop_it) {
        kill(f.p.pid, SIGKILL);
    }
    peer_stop(&f.p);
}

static void
test_node_peer_killed(void **state)
{
    (void)state;
    peer_dies(false);
}

static void
test_node_peer_stopped(void **state)
{
    (void)state;
    // Only the heartbeats can find a stopped peer: 2 s of silence here
    // (the Down is awaited for TU_WAIT_MS, 10 s).
    g_dead_after = "2000";
    g_dead_after_ms = 2000;
    peer_dies(true);
    g_dead_after = "8000";
    g_dead_after_ms = 8000;
}

// The filler: on "go" (any message from no one) it sends requests to the
// actor at s->to until one is refused, then counts the replies.
typedef struct filler {
    tr_actor_addr to;
    unsigned accepted, replies; // under lock
    bool filled;                // under lock
    tr_err refusal;             // under lock
    pthread_mutex_t lock;
    pthread_cond_t cv;
} filler;

static tr_err
filler_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(filler **)state = arg;
    return TR_OK;
}

static void
filler_receive(tr_actor *self, void *state, tr_msg *m)
{
    filler *f = *(filler **)state;
    if (tr_msg_correlation(m) == 0) {
        tr_err err = TR_OK;
        unsigned n = 0;
        // The bound: the link's buffer and the kernel's take a few
        // hundred; a million is far past them.
        for (unsigned i = 0; i < 1000000 && err == TR_OK; i++) {
            tr_msg *r = num_msg(5, i);
            err = tr_actor_request(self, f->to, r, 0, NULL);
            if (err != TR_OK) {
                tr_msg_free(r); // refused: still ours
            } else {
                n++;
            }
        }
        pthread_mutex_lock(&f->lock);
        f->accepted = n;
        f->refusal = err;
        f->filled = true;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->lock);
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->replies += !tr_msg_is(m, &troupe__v1__call_failed__descriptor);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
}

static const tr_actor_spec filler_spec = {
    .name = "filler", .size = sizeof(filler *), .init = filler_init, .receive = filler_receive};

// filler_wait waits for *flag, or for every accepted request's reply.
static bool
filler_wait(filler *f, bool replies)
{
    struct timespec dl = tu_abstime(TU_WAIT_MS);
    pthread_mutex_lock(&f->lock);
    while (!(replies ? f->filled && f->replies >= f->accepted : f->filled) &&
           pthread_cond_timedwait(&f->cv, &f->lock, &dl) == 0) {
    }
    bool ok = replies ? f->filled && f->replies >= f->accepted : f->filled;
    pthread_mutex_unlock(&f->lock);
    return ok;
}

// A peer that stops reading (SIGSTOP): requests to it fill the link's
// buffer, then are refused at once with TR_EAGAIN (never dropped while the
// caller waits for a reply that cannot come) and counted; once the peer
// runs again every accepted request is answered, though the replies
// overflow the peer's own buffer.
static void
test_node_link_full(void **state)
{
    (void)state;
    // Long enough that the stopped peer is not declared dead meanwhile.
    g_dead_after = "60000";
    g_dead_after_ms = 60000;
    // A short link buffer, so that it fills with a few dozen requests.
    g_sendbuf = 64;
    fix f;
    // The peer's own link buffer is smaller still: the burst of replies to
    // what filled ours overflows it, and those replies (the forced lane)
    // wait for room instead of being lost.
    fix_up(&f, "--sendbuf", "16");
    filler fl = {.lock = PTHREAD_MUTEX_INITIALIZER};
    tu_cond_init(&fl.cv);
    assert_int_equal(tr_node_whereis(f.n, f.peer, "echo", TU_WAIT_MS, &fl.to), TR_OK);
    tr_actor_addr fa;
    assert_int_equal(tr_actor_spawn(f.b.rt, &filler_spec, &fl, NULL, &fa), TR_OK);
    kill(f.p.pid, SIGSTOP);
    step("filling the link");
    assert_int_equal(tr_actor_send(NULL, fa, num_msg(1, 0)), TR_OK);
    assert_true(filler_wait(&fl, false));
    assert_int_equal(fl.refusal, TR_EAGAIN);
    assert_true(fl.accepted >= 64);
    tr_node_stats st;
    tr_node_stats_get(f.n, &st);
    assert_true(st.send_full >= 1);
    // A call from a task while the peer is stopped: refused at once if the
    // link is still full when it is made (the buffer's edge moves as nng
    // pushes what it holds into the pipe), else answered once the peer runs
    // again; never lost with its caller waiting.
    tr_join call;
    call_start(f.b.rt, fl.to, 1, 0, 0, 0, &call);
    kill(f.p.pid, SIGCONT);
    step("replies after SIGCONT");
    tr_err last;
    uint64_t ok = call_finish(&call, &last);
    assert_true((ok == 1 && last == TR_OK) || (ok == 0 && last == TR_EAGAIN));
    assert_true(filler_wait(&fl, true)); // every one answered
    assert_int_equal(call_n(f.b.rt, fl.to, 10, 0, &last), 10);
    tr_node_stats_get(f.n, &st);
    assert_int_equal(st.park_lost, 0);
    assert_true(tr_node_peer_up(f.n, f.peer));
    fix_down(&f);
    pthread_cond_destroy(&fl.cv);
    g_sendbuf = 0;
    g_dead_after = "8000";
    g_dead_after_ms = 8000;
}

// Many callers at once: their requests share frames (a worker's run of
// polls sends the peer one), which stay within the peer's small receive
// limit (its Hello says it; a frame past it would cost the link), and
// every caller's answers come back in order (each checks that the i-th
// answer is its i-th request's).
static void
test_node_frames_batch_within_limit(void **state)
{
    (void)state;
    fix f;
    fix_up(&f, "--recv-max", "2048");
    tr_actor_addr echo;
    assert_int_equal(tr_node_whereis(f.n, f.peer, "echo", TU_WAIT_MS, &echo), TR_OK);
    enum { CALLERS = 64, CALLS = 100 };
    tr_join j[CALLERS];
    step("64 callers");
    for (int i = 0; i < CALLERS; i++) {
        call_start(f.b.rt, echo, CALLS, 0, 0, 0, &j[i]);
    }
    for (int i = 0; i < CALLERS; i++) {
        tr_err last;
        assert_int_equal(call_finish(&j[i], &last), CALLS);
        assert_int_equal(last, TR_OK);
    }
    tr_node_stats st;
    tr_node_stats_get(f.n, &st);
    assert_true(st.sent >= CALLERS * CALLS);
    assert_true(st.frames_sent < st.sent); // some frames carried more than one
    assert_int_equal(st.park_lost, 0);
    assert_int_equal(st.pipes_closed, 0);
    assert_true(tr_node_peer_up(f.n, f.peer));
    fix_down(&f);
}

// tls+tcp on loopback: both nodes listen with the same self-signed
// certificate (CN localhost, SAN 127.0.0.1) and trust it as their CA, and
// present the same token.
static void
test_node_tls(void **state)
{
    (void)state;
    char dir[64], cmd[2048], both[96], cert[96];
    snprintf(dir, sizeof dir, "/tmp/troupe-tls-%d", (int)getpid());
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(both, sizeof both, "%s/both.pem", dir);
    if (!make_cert(dir, cert, both)) {
        skip(); // no openssl: deploy/debian-deps.sh installs it
    }
    const char *extra[] = {"--token", "tls-token", "--cert", both, "--ca", cert, NULL};
    peerproc p;
    peer_start_on(&p, "tls+tcp://127.0.0.1:0", extra);
    assert_true(strncmp(p.url, "tls+tcp://127.0.0.1:", 20) == 0);
    assert_true(strcmp(p.url, "tls+tcp://127.0.0.1:0") != 0); // the real port
    bg b;
    step("bg_start and the test's calls");
    bg_start(&b, 2);
    tr_node_opts o = {.listen = "tls+tcp://127.0.0.1:0",
                      .token = "tls-token",
                      .tls_cert_key_file = both,
                      .tls_ca_file = cert,
                      .heartbeat_ms = 100,
                      .dead_after_ms = g_dead_after_ms};
    tr_node *n = NULL;
    assert_int_equal(tr_node_start(b.rt, &o, &n), TR_OK);
    uint64_t peer = 0;
    assert_int_equal(tr_node_connect(n, p.url, TU_WAIT_MS, &peer), TR_OK);
    tr_actor_addr echo;
    assert_int_equal(tr_node_whereis(n, peer, "echo", TU_WAIT_MS, &echo), TR_OK);
    tr_err last;
    assert_int_equal(call_n(b.rt, echo, 100, 0, &last), 100);
    step("tr_node_stop");
    assert_int_equal(tr_node_stop(n), TR_OK);
    // Plain tcp, off loopback or without the test flag, is refused.
    tr_node_opts plain = {.listen = "tcp://127.0.0.1:0", .token = "t"};
    assert_int_equal(tr_node_start(b.rt, &plain, &n), TR_EINVAL);
    plain.allow_plain_tcp = true;
    plain.listen = "tcp://0.0.0.0:0";
    assert_int_equal(tr_node_start(b.rt, &plain, &n), TR_EINVAL);
    tr_node_opts notoken = {.listen = "tls+tcp://127.0.0.1:0", .tls_cert_key_file = both};
    assert_int_equal(tr_node_start(b.rt, &notoken, &n), TR_EINVAL);
    step("bg_stop");
    bg_stop(&b);
    assert_int_equal(peer_stop(&p), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    TU_CHECK(system(cmd) == 0);
}

// hostile_main is the --hostile process: to the peer at url, garbage on a
// raw PUSH, then a message over its limit on another; it exits without
// closing either (see test_node_hostile_input).
static int
hostile_main(const char *url)
{
    nng_socket raw, raw2;
    if (nng_push0_open(&raw) != 0 || nng_push0_open(&raw2) != 0) {
        return 1;
    }
    // No redial when the peer drops a pipe, and every send bounded.
    nng_socket_set_ms(raw, NNG_OPT_RECONNMINT, 3600000);
    nng_socket_set_ms(raw, NNG_OPT_RECONNMAXT, 3600000);
    nng_socket_set_int(raw, NNG_OPT_SENDBUF, 16);
    nng_socket_set_ms(raw, NNG_OPT_SENDTIMEO, 2000);
    nng_socket_set_ms(raw2, NNG_OPT_RECONNMINT, 3600000);
    nng_socket_set_ms(raw2, NNG_OPT_RECONNMAXT, 3600000);
    nng_socket_set_ms(raw2, NNG_OPT_SENDTIMEO, 500);
    if (nng_dial(raw, url, NULL, 0) != 0) {
        return 2;
    }
    const char junk[] = "\x00\x00\x00\x00\x00\x00\x00\x00garbage";
    if (nng_send(raw, (void *)junk, sizeof junk, 0) != 0) {
        return 3;
    }
    if (nng_dial(raw2, url, NULL, 0) != 0) {
        return 4;
    }
    // The peer drops the pipe of the oversized message: whatever the send
    // says.
    size_t big = 1 << 20;
    char *buf = calloc(1, big);
    (void)nng_send(raw2, buf, big, 0);
    free(buf);
    _exit(0); // no close, no nng_fini: see above
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--hostile") == 0) {
        return hostile_main(argv[2]);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_call_whereis_and_monitor),
        cmocka_unit_test(test_node_remote_executor),
        cmocka_unit_test(test_node_remote_cancel_status_shutdown),
        cmocka_unit_test(test_node_hostile_input),
        cmocka_unit_test(test_node_token),
        cmocka_unit_test(test_node_peer_killed),
        cmocka_unit_test(test_node_peer_stopped),
        cmocka_unit_test(test_node_link_full),
        cmocka_unit_test(test_node_frames_batch_within_limit),
        cmocka_unit_test(test_node_tls),
    };
    int rc = tu_run(tests);
    step("nng_fini");
    nng_fini();
    alarm(0);
    return rc;
}

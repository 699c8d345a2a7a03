// test_actor.c: actors of troupe/actor.h through the public API only:
// sending and receiving, order, stale addresses, calls from tasks and
// requests from actors, bounded mailboxes, monitors, links, stop, names,
// shutdown with actors still running.
//
// Bodies are troupe.v1 types: an Address carries two numbers (node: a
// sender or tag, actor: a sequence number), a Reason a code and a text.
#include "actors/actor_util.h"

// ---------------------------------------------------------------------------
// A recorder: counts messages, checks order per sender tag, remembers the
// last Down / Exit / CallFailed, and sets an event when `want` messages
// have arrived.

#define NTAGS 16

typedef struct rec {
    pthread_mutex_t lock;
    tu_event done;
    uint64_t want;
    uint64_t got; // user messages (numbers)
    uint64_t sum;
    uint64_t next[NTAGS]; // per tag: the next sequence number expected
    uint64_t out_of_order;
    uint64_t downs, exits, failed, replies, stopped;
    tr_err last_reason;
    uint64_t last_corr;
    tr_actor_addr last_from;
    tr_err stopped_reason;
    char last_text[64];
    tu_event stopped_ev;
} rec;

static void
rec_init(rec *r, uint64_t want)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    tu_event_init(&r->done);
    tu_event_init(&r->stopped_ev);
    r->want = want;
}

static uint64_t
rec_got_(void *p)
{
    rec *r = p;
    pthread_mutex_lock(&r->lock);
    uint64_t n = r->got;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static void
rec_fini(rec *r)
{
    pthread_mutex_destroy(&r->lock);
    tu_event_destroy(&r->done);
    tu_event_destroy(&r->stopped_ev);
}

typedef struct rec_state {
    rec *r;
    uint32_t mode; // behaviour switches, below
    tr_actor_addr peer;
} rec_state;

enum {
    M_PLAIN = 0,
    M_ECHO = 1,    // replies to every number with seq + 1
    M_STOP_ON = 2, // a number with tag 99 stops it with the code in seq
    M_SILENT = 4,  // never replies
};

static tr_err
rec_init_cb(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(rec_state *)state = *(rec_state *)arg;
    return TR_OK;
}

static void
note(rec *r, const char *text)
{
    snprintf(r->last_text, sizeof r->last_text, "%s", text);
}

static void
rec_receive(tr_actor *self, void *state, tr_msg *m)
{
    rec_state *st = state;
    rec *r = st->r;
    const Troupe__V1__Address *n = num_of(m);
    if (n != NULL && (st->mode & M_STOP_ON) && n->node == 99) {
        tr_actor_stop(self, (tr_err)n->actor, "asked to");
        return;
    }
    if (n != NULL && (st->mode & M_ECHO)) {
        tr_actor_reply(self, m, num_msg(n->node, n->actor + 1));
    }
    pthread_mutex_lock(&r->lock);
    bool fire = false;
    if (n != NULL) {
        if (tr_msg_correlation(m) != 0 && !(st->mode & M_ECHO)) {
            r->replies++;
            r->last_corr = tr_msg_correlation(m);
        }
        r->got++;
        r->sum += n->actor;
        if (n->node < NTAGS) {
            if (n->actor != r->next[n->node]) {
                r->out_of_order++;
            }
            r->next[n->node] = n->actor + 1;
        }
        fire = r->got == r->want;
    } else if (tr_msg_is(m, &troupe__v1__down__descriptor)) {
        const Troupe__V1__Down *d = tr_msg_body(m);
        r->downs++;
        r->last_reason = tr_msg_reason_err(d->reason);
        r->last_from = (tr_actor_addr){d->actor->node, d->actor->actor};
        note(r, tr_msg_reason_text(d->reason));
        fire = true;
    } else if (tr_msg_is(m, &troupe__v1__exit__descriptor)) {
        const Troupe__V1__Exit *x = tr_msg_body(m);
        r->exits++;
        r->last_reason = tr_msg_reason_err(x->reason);
        r->last_from = (tr_actor_addr){x->from->node, x->from->actor};
        fire = true;
    } else if (tr_msg_is(m, &troupe__v1__call_failed__descriptor)) {
        const Troupe__V1__CallFailed *f = tr_msg_body(m);
        r->failed++;
        r->last_reason = tr_msg_reason_err(f->reason);
        r->last_corr = f->correlation;
        fire = true;
    }
    pthread_mutex_unlock(&r->lock);
    if (fire) {
        tu_event_set(&r->done);
    }
}

static void
rec_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    rec *r = ((rec_state *)state)->r;
    pthread_mutex_lock(&r->lock);
    r->stopped++;
    r->stopped_reason = reason;
    pthread_mutex_unlock(&r->lock);
    tu_event_set(&r->stopped_ev);
}

static const tr_actor_spec rec_spec = {
    .name = "rec",
    .size = sizeof(rec_state),
    .init = rec_init_cb,
    .receive = rec_receive,
    .stopped = rec_stopped,
};

static tr_actor_addr
spawn_rec(tr_rt *rt, rec *r, uint32_t mode, const tr_actor_opts *opts)
{
    rec_state init = {r, mode, TR_ACTOR_NONE};
    tr_actor_addr a = TR_ACTOR_NONE;
    assert_int_equal(tr_actor_spawn(rt, &rec_spec, &init, opts, &a), TR_OK);
    assert_false(tr_actor_addr_is_none(a));
    assert_int_equal(a.node, 0);
    return a;
}

static void
send_ok(tr_actor_addr to, tr_msg *m)
{
    tr_err err = tr_actor_send(NULL, to, m);
    if (err != TR_OK) {
        tr_msg_free(m);
    }
    assert_int_equal(err, TR_OK);
}

// ---------------------------------------------------------------------------
// Sending and receiving.

static void
test_actor_send_and_receive(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec r;
    rec_init(&r, 1000);
    tr_actor_addr a = spawn_rec(b.rt, &r, M_PLAIN, NULL);
    assert_true(tr_actor_alive(a));
    for (uint64_t i = 0; i < 1000; i++) {
        send_ok(a, num_msg(0, i));
    }
    assert_true(tu_event_wait(&r.done, TU_WAIT_MS));
    assert_int_equal(r.got, 1000);
    assert_int_equal(r.sum, 999 * 1000 / 2);
    assert_int_equal(r.out_of_order, 0);
    // Not an actor message: refused, the caller keeps it.
    tr_msg *plain = tr_msg_alloc(sizeof(tr_msg));
    assert_int_equal(tr_actor_send(NULL, a, plain), TR_EINVAL);
    tr_msg_free(plain);
    assert_int_equal(tr_actor_stop_other(a, TR_OK, NULL), TR_OK);
    assert_true(tu_event_wait(&r.stopped_ev, TU_WAIT_MS));
    assert_int_equal(r.stopped_reason, TR_OK);
    bg_stop(&b);
    rec_fini(&r);
}

typedef struct sender_arg {
    tr_actor_addr to;
    uint64_t tag, n;
} sender_arg;

static void *
sender_main(void *arg)
{
    sender_arg *sa = arg;
    for (uint64_t i = 0; i < sa->n; i++) {
        tr_msg *m = num_msg(sa->tag, i);
        if (tr_actor_send(NULL, sa->to, m) != TR_OK) {
            tr_msg_free(m);
            TU_CHECK(false);
        }
    }
    return NULL;
}

static void
test_actor_order_per_sender(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    enum { SENDERS = 4, EACH = 20000 };
    rec r;
    rec_init(&r, SENDERS * EACH);
    tr_actor_addr a = spawn_rec(b.rt, &r, M_PLAIN, NULL);
    pthread_t th[SENDERS];
    sender_arg sa[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        sa[i] = (sender_arg){a, (uint64_t)i + 1, EACH};
        tu_thread_start(&th[i], sender_main, &sa[i]);
    }
    for (int i = 0; i < SENDERS; i++) {
        tu_thread_join(th[i]);
    }
    assert_true(tu_event_wait(&r.done, TU_WAIT_MS));
    assert_int_equal(r.got, SENDERS * EACH);
    assert_int_equal(r.out_of_order, 0);
    for (int i = 0; i < SENDERS; i++) {
        assert_int_equal(r.next[i + 1], EACH);
    }
    bg_stop(&b); // the actor is still running: the shutdown stops it
    assert_int_equal(r.stopped, 1);
    assert_int_equal(r.stopped_reason, TR_ESHUTDOWN);
    rec_fini(&r);
}

static void
test_actor_stale_address(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec r;
    rec_init(&r, 1);
    tr_actor_addr a = spawn_rec(b.rt, &r, M_STOP_ON, NULL);
    send_ok(a, num_msg(99, TR_EIO));
    assert_true(tu_event_wait(&r.stopped_ev, TU_WAIT_MS));
    assert_int_equal(r.stopped_reason, TR_EIO);
    // Once stopped (its entry freed just after `stopped` ran), the address
    // is stale for good.
    assert_true(TU_SPIN_UNTIL(!tr_actor_alive(a), TU_WAIT_MS));
    tr_msg *m = num_msg(0, 0);
    assert_int_equal(tr_actor_send(NULL, a, m), TR_ENOTFOUND);
    tr_msg_free(m);
    assert_int_equal(tr_actor_stop_other(a, TR_OK, NULL), TR_ENOTFOUND);
    // New actors never get the old address, though they may reuse its entry.
    rec r2;
    rec_init(&r2, 1);
    for (int i = 0; i < 100; i++) {
        tr_actor_addr n = spawn_rec(b.rt, &r2, M_PLAIN, NULL);
        assert_false(tr_actor_addr_eq(n, a));
        assert_int_equal(tr_actor_stop_other(n, TR_OK, NULL), TR_OK);
    }
    m = num_msg(0, 0);
    assert_int_equal(tr_actor_send(NULL, a, m), TR_ENOTFOUND);
    tr_msg_free(m);
    bg_stop(&b);
    assert_int_equal(r2.stopped, 100);
    rec_fini(&r);
    rec_fini(&r2);
}

// ---------------------------------------------------------------------------
// Calls from a task.

typedef struct caller {
    int tr_pc;
    tr_actor_addr to;
    uint64_t n, i, timeout_ns;
    tr_actor_op op;
    tr_msg *req, *reply;
    tr_err err;
    uint64_t ok, bad;
    tr_err last;
    tu_event *done;
} caller;

static tr_poll
caller_poll(void *arg, tr_cx *cx)
{
    caller *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        st->req = num_msg(7, st->i);
        TR_AWAIT(st,
                 tr_actor_call(st->to, cx, &st->op, st->req, st->timeout_ns, &st->reply, &st->err));
        st->last = st->err;
        if (st->err == TR_OK) {
            const Troupe__V1__Address *n = num_of(st->reply);
            if (n != NULL && n->actor == st->i + 1 && tr_msg_correlation(st->reply) != 0) {
                st->ok++;
            } else {
                st->bad++;
            }
            tr_msg_free(st->reply);
        } else {
            TU_CHECK(st->reply == NULL);
            break;
        }
    }
    tu_event_set(st->done);
    TR_END(st);
}

static void
caller_drop(void *arg)
{
    tr_actor_op_abandon(&((caller *)arg)->op);
}

static const tr_task_spec caller_spec = {"caller", caller_poll, caller_drop, sizeof(caller)};

static void
run_caller(tr_rt *rt, caller *c, tr_join *j)
{
    assert_int_equal(tr_spawn(rt, &caller_spec, NULL, c, j), TR_OK);
}

static void
test_actor_call_from_task(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec r;
    rec_init(&r, 0);
    tr_actor_addr echo = spawn_rec(b.rt, &r, M_ECHO | M_STOP_ON, NULL);
    tu_event done;
    tu_event_init(&done);
    caller c = {.to = echo, .n = 2000, .done = &done};
    tr_join j;
    run_caller(b.rt, &c, &j);
    tr_outcome out;
    assert_true(tu_event_wait(&done, TU_WAIT_MS));
    assert_int_equal(tr_join_wait(&j, &out), TR_OK);
    tu_event_destroy(&done);

    // A second caller checks its own copy of the counters: join the task
    // and read the state through a result pointer is overkill; use events.
    (void)out;
    bg_stop(&b);
    rec_fini(&r);
}

// The caller's state lives in the pool: read it back through a result.
typedef struct call_result {
    uint64_t ok, bad;
    tr_err last;
} call_result;

static call_result g_cr;

static tr_poll
caller2_poll(void *arg, tr_cx *cx)
{
    caller *st = arg;
    tr_poll p = caller_poll(arg, cx);
    if (p == TR_READY) {
        g_cr.ok = st->ok;
        g_cr.bad = st->bad;
        g_cr.last = st->last;
    }
    return p;
}

static const tr_task_spec caller2_spec = {"caller2", caller2_poll, caller_drop, sizeof(caller)};

static call_result
call_n(tr_rt *rt, tr_actor_addr to, uint64_t n, uint64_t timeout_ns)
{
    tu_event done;
    tu_event_init(&done);
    caller c = {.to = to, .n = n, .timeout_ns = timeout_ns, .done = &done};
    tr_join j;
    memset(&g_cr, 0, sizeof g_cr);
    assert_int_equal(tr_spawn(rt, &caller2_spec, NULL, &c, &j), TR_OK);
    assert_int_equal(tr_join_wait(&j, NULL), TR_OK);
    tu_event_destroy(&done);
    return g_cr;
}

static void
test_actor_call_outcomes(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec r;
    rec_init(&r, 0);
    tr_actor_addr echo = spawn_rec(b.rt, &r, M_ECHO, NULL);
    call_result cr = call_n(b.rt, echo, 3000, 0);
    assert_int_equal(cr.ok, 3000);
    assert_int_equal(cr.bad, 0);
    assert_int_equal(cr.last, TR_OK);

    // A callee that never replies: the timeout.
    rec rs;
    rec_init(&rs, 0);
    tr_actor_addr silent = spawn_rec(b.rt, &rs, M_SILENT, NULL);
    cr = call_n(b.rt, silent, 1, 20 * 1000 * 1000);
    assert_int_equal(cr.last, TR_ETIMEDOUT);

    // A callee that is gone: at once.
    assert_int_equal(tr_actor_stop_other(silent, TR_OK, NULL), TR_OK);
    assert_true(tu_event_wait(&rs.stopped_ev, TU_WAIT_MS));
    assert_true(TU_SPIN_UNTIL(!tr_actor_alive(silent), TU_WAIT_MS));
    cr = call_n(b.rt, silent, 1, 0);
    assert_int_equal(cr.last, TR_ENOTFOUND);

    // A callee that stops while the call waits: its reason, not a timeout
    // (no timeout is set: the call would hang otherwise).
    rec rk;
    rec_init(&rk, 0);
    tr_actor_addr stopper = spawn_rec(b.rt, &rk, M_SILENT, NULL);
    tu_event done;
    tu_event_init(&done);
    caller c = {.to = stopper, .n = 1, .done = &done};
    tr_join j;
    memset(&g_cr, 0, sizeof g_cr);
    assert_int_equal(tr_spawn(b.rt, &caller2_spec, NULL, &c, &j), TR_OK);
    // Wait until the request has arrived, then stop the callee.
    assert_true(TU_SPIN_UNTIL(rec_got_(&rk) == 1, TU_WAIT_MS));
    assert_int_equal(tr_actor_stop_other(stopper, TR_EIO, "disk"), TR_OK);
    assert_int_equal(tr_join_wait(&j, NULL), TR_OK);
    assert_int_equal(g_cr.last, TR_EIO);
    // A normal stop without a reply fails the call too.
    tr_actor_addr stopper2 = spawn_rec(b.rt, &rk, M_SILENT, NULL);
    memset(&g_cr, 0, sizeof g_cr);
    c.to = stopper2;
    assert_int_equal(tr_spawn(b.rt, &caller2_spec, NULL, &c, &j), TR_OK);
    assert_true(TU_SPIN_UNTIL(rec_got_(&rk) == 2, TU_WAIT_MS));
    assert_int_equal(tr_actor_stop_other(stopper2, TR_OK, NULL), TR_OK);
    assert_int_equal(tr_join_wait(&j, NULL), TR_OK);
    assert_int_equal(g_cr.last, TR_ECLOSED);
    tu_event_destroy(&done);
    bg_stop(&b);
    rec_fini(&r);
    rec_fini(&rs);
    rec_fini(&rk);
}

// ---------------------------------------------------------------------------
// Requests from an actor.

typedef struct asker {
    rec *r;
    tr_actor_addr callee;
    uint64_t timeout_ns;
    rec *echo; // trigger 51: spawn a local echo actor of this record as the callee
} asker;

static tr_err
asker_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(asker *)state = *(asker *)arg;
    return TR_OK;
}

static void
asker_receive(tr_actor *self, void *state, tr_msg *m)
{
    asker *st = state;
    const Troupe__V1__Address *n = num_of(m);
    if (n != NULL && n->node == 51) {
        // From a worker: a local actor starts on this one (TR_ACTOR_LOCAL).
        rec_state init = {st->echo, M_ECHO | M_STOP_ON, TR_ACTOR_NONE};
        tr_actor_opts o = {.flags = TR_ACTOR_LOCAL};
        TU_CHECK(tr_actor_spawn(tr_actor_rt(self), &rec_spec, &init, &o, &st->callee) == TR_OK);
    }
    if (n != NULL && (n->node == 50 || n->node == 51)) {
        // The trigger: ask the callee.
        uint64_t corr = 0;
        tr_msg *q = num_msg(1, n->actor);
        tr_err err = tr_actor_request(self, st->callee, q, st->timeout_ns, &corr);
        if (err != TR_OK) {
            tr_msg_free(q);
            pthread_mutex_lock(&st->r->lock);
            st->r->last_reason = err;
            st->r->failed++;
            pthread_mutex_unlock(&st->r->lock);
            tu_event_set(&st->r->done);
        }
        return;
    }
    rec_state rs = {st->r, M_PLAIN, TR_ACTOR_NONE};
    rec_receive(self, &rs, m);
}

static const tr_actor_spec asker_spec = {
    .name = "asker", .size = sizeof(asker), .init = asker_init, .receive = asker_receive};

static void
test_actor_request_from_actor(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec re, ra;
    rec_init(&re, 0);
    rec_init(&ra, 1);
    tr_actor_addr echo = spawn_rec(b.rt, &re, M_ECHO | M_STOP_ON, NULL);
    asker init = {&ra, echo, 0, NULL};
    tr_actor_addr a;
    assert_int_equal(tr_actor_spawn(b.rt, &asker_spec, &init, NULL, &a), TR_OK);
    send_ok(a, num_msg(50, 41));
    assert_true(tu_event_wait(&ra.done, TU_WAIT_MS));
    assert_int_equal(ra.replies, 1);
    assert_int_equal(ra.sum, 42);
    assert_int_equal(ra.failed, 0);

    // A callee that stops before replying: CallFailed with its reason.
    rec rs;
    rec_init(&rs, 0);
    tr_actor_addr silent = spawn_rec(b.rt, &rs, M_SILENT | M_STOP_ON, NULL);
    asker init2 = {&ra, silent, 0, NULL};
    tr_actor_addr a2;
    assert_int_equal(tr_actor_spawn(b.rt, &asker_spec, &init2, NULL, &a2), TR_OK);
    tu_event_init(&ra.done);
    send_ok(a2, num_msg(50, 1));
    assert_true(TU_SPIN_UNTIL(rec_got_(&rs) == 1, TU_WAIT_MS));
    send_ok(silent, num_msg(99, TR_EPIPE));
    assert_true(tu_event_wait(&ra.done, TU_WAIT_MS));
    assert_int_equal(ra.failed, 1);
    assert_int_equal(ra.last_reason, TR_EPIPE);

    // A timeout.
    rec rq;
    rec_init(&rq, 0);
    tr_actor_addr quiet = spawn_rec(b.rt, &rq, M_SILENT, NULL);
    asker init3 = {&ra, quiet, 10 * 1000 * 1000, NULL};
    tr_actor_addr a3;
    assert_int_equal(tr_actor_spawn(b.rt, &asker_spec, &init3, NULL, &a3), TR_OK);
    tu_event_init(&ra.done);
    send_ok(a3, num_msg(50, 1));
    assert_true(tu_event_wait(&ra.done, TU_WAIT_MS));
    assert_int_equal(ra.failed, 2);
    assert_int_equal(ra.last_reason, TR_ETIMEDOUT);

    // TR_ACTOR_LOCAL: an asker started so (from this thread) starts a local
    // callee from its worker (which wakes no idle worker) and asks it.
    rec rl;
    rec_init(&rl, 0);
    asker init4 = {&ra, TR_ACTOR_NONE, 0, &rl};
    tr_actor_opts lo = {.flags = TR_ACTOR_LOCAL};
    tr_actor_addr a4;
    assert_int_equal(tr_actor_spawn(b.rt, &asker_spec, &init4, &lo, &a4), TR_OK);
    tu_event_init(&ra.done);
    pthread_mutex_lock(&ra.lock);
    ra.want = 2; // its second reply
    pthread_mutex_unlock(&ra.lock);
    send_ok(a4, num_msg(51, 41));
    assert_true(tu_event_wait(&ra.done, TU_WAIT_MS));
    assert_int_equal(ra.replies, 2);
    assert_int_equal(ra.sum, 84);
    assert_int_equal(ra.failed, 2);
    bg_stop(&b);
    tu_checks_pass();
    rec_fini(&rl);
    rec_fini(&re);
    rec_fini(&ra);
    rec_fini(&rs);
    rec_fini(&rq);
}

// ---------------------------------------------------------------------------
// Bounded mailboxes and the system lane.

typedef struct waiter_task {
    int tr_pc;
    tr_actor_addr to;
    uint64_t i, n;
    tr_actor_op op;
    tr_msg *m;
    tr_err err;
} waiter_task;

static tr_poll
waiter_poll(void *arg, tr_cx *cx)
{
    waiter_task *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        st->m = num_msg(3, st->i);
        TR_AWAIT(st, tr_actor_send_wait(st->to, cx, &st->op, st->m, &st->err));
        if (st->err != TR_OK) {
            tr_msg_free(st->m);
            TU_CHECK(false);
            break;
        }
    }
    TR_END(st);
}

static const tr_task_spec waiter_spec = {"waiter", waiter_poll, NULL, sizeof(waiter_task)};

static void
test_actor_bounded_mailbox(void **state)
{
    (void)state;
    // One worker, which runs only inside tr_rt_run: until bg_start_on
    // nothing consumes, and the mailbox fills.
    tr_rt *rt = rt_new(1);
    rec r;
    rec_init(&r, 4 + 5000);
    tr_actor_opts opts = {.bound = 4};
    tr_actor_addr a = spawn_rec(rt, &r, M_PLAIN, &opts);
    for (uint64_t i = 0; i < 4; i++) {
        send_ok(a, num_msg(2, i));
    }
    tr_msg *m = num_msg(2, 4);
    assert_int_equal(tr_actor_send(NULL, a, m), TR_EAGAIN);
    tr_msg_free(m);
    // A task that waits for room, 5000 times over.
    waiter_task w = {.to = a, .n = 5000};
    tr_join j;
    assert_int_equal(tr_spawn(rt, &waiter_spec, NULL, &w, &j), TR_OK);
    bg b;
    bg_start_on(&b, rt);
    assert_int_equal(tr_join_wait(&j, NULL), TR_OK);
    assert_true(tu_event_wait(&r.done, TU_WAIT_MS));
    assert_int_equal(r.got, 5004);
    assert_int_equal(r.next[2], 4);
    assert_int_equal(r.next[3], 5000);
    assert_int_equal(r.out_of_order, 0);
    bg_stop(&b);
    rec_fini(&r);
}

static void
test_actor_stop_jumps_the_queue(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(1);
    rec r;
    rec_init(&r, 0);
    tr_actor_addr a = spawn_rec(rt, &r, M_PLAIN, NULL);
    for (uint64_t i = 0; i < 100; i++) {
        send_ok(a, num_msg(0, i));
    }
    assert_int_equal(tr_actor_stop_other(a, TR_ECANCELED, "enough"), TR_OK);
    bg b;
    bg_start_on(&b, rt);
    assert_true(tu_event_wait(&r.stopped_ev, TU_WAIT_MS));
    // Stopped before its first user message; the 100 were freed (ASan
    // checks they did not leak).
    assert_int_equal(r.got, 0);
    assert_int_equal(r.stopped_reason, TR_ECANCELED);
    bg_stop(&b);
    rec_fini(&r);
}

// ---------------------------------------------------------------------------
// Monitors and links.

static void
test_actor_monitor_down_after_messages(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec rw, rt_;
    rec_init(&rw, 0);
    rec_init(&rt_, 0);
    tr_actor_addr watcher = spawn_rec(b.rt, &rw, M_PLAIN, NULL);
    tr_actor_addr target = spawn_rec(b.rt, &rt_, M_STOP_ON, NULL);
    uint64_t ref = 0;
    assert_int_equal(tr_actor_monitor(watcher, target, &ref), TR_OK);
    assert_int_not_equal(ref, 0);
    send_ok(target, num_msg(99, TR_EIO));
    assert_true(tu_event_wait(&rw.done, TU_WAIT_MS));
    assert_int_equal(rw.downs, 1);
    assert_int_equal(rw.last_reason, TR_EIO);
    assert_string_equal(rw.last_text, "asked to");
    assert_true(tr_actor_addr_eq(rw.last_from, target));
    // Monitoring an actor that is gone: a Down at once, TR_ENOTFOUND.
    tu_event_init(&rw.done);
    assert_true(TU_SPIN_UNTIL(!tr_actor_alive(target), TU_WAIT_MS));
    assert_int_equal(tr_actor_monitor(watcher, target, &ref), TR_OK);
    assert_true(tu_event_wait(&rw.done, TU_WAIT_MS));
    assert_int_equal(rw.downs, 2);
    assert_int_equal(rw.last_reason, TR_ENOTFOUND);
    bg_stop(&b);
    rec_fini(&rw);
    rec_fini(&rt_);
}

// An actor that links to its peer at its first message, then records.
typedef struct linker {
    rec *r;
    tr_actor_addr peer;
} linker;

static tr_err
linker_init(tr_actor *self, void *state, void *arg)
{
    *(linker *)state = *(linker *)arg;
    return tr_actor_link(self, ((linker *)arg)->peer);
}

static void
linker_receive(tr_actor *self, void *state, tr_msg *m)
{
    linker *st = state;
    rec_state rs = {st->r, M_STOP_ON, TR_ACTOR_NONE};
    rec_receive(self, &rs, m);
}

static void
linker_stopped(tr_actor *self, void *state, tr_err reason)
{
    rec_state rs = {((linker *)state)->r, 0, TR_ACTOR_NONE};
    rec_stopped(self, &rs, reason);
}

static const tr_actor_spec linker_spec = {.name = "linker",
                                          .size = sizeof(linker),
                                          .init = linker_init,
                                          .receive = linker_receive,
                                          .stopped = linker_stopped};

static void
test_actor_links(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    // An abnormal stop takes the linked actor with it, with the reason.
    rec rp, rl;
    rec_init(&rp, 0);
    rec_init(&rl, 0);
    tr_actor_addr peer = spawn_rec(b.rt, &rp, M_STOP_ON, NULL);
    linker li = {&rl, peer};
    tr_actor_addr l;
    assert_int_equal(tr_actor_spawn(b.rt, &linker_spec, &li, NULL, &l), TR_OK);
    send_ok(peer, num_msg(99, TR_EIO));
    assert_true(tu_event_wait(&rl.stopped_ev, TU_WAIT_MS));
    assert_int_equal(rl.stopped_reason, TR_EIO);

    // A normal stop does not.
    rec rp2, rl2;
    rec_init(&rp2, 0);
    rec_init(&rl2, 1);
    tr_actor_addr peer2 = spawn_rec(b.rt, &rp2, M_STOP_ON, NULL);
    linker li2 = {&rl2, peer2};
    tr_actor_addr l2;
    assert_int_equal(tr_actor_spawn(b.rt, &linker_spec, &li2, NULL, &l2), TR_OK);
    send_ok(peer2, num_msg(99, TR_OK));
    assert_true(tu_event_wait(&rp2.stopped_ev, TU_WAIT_MS));
    send_ok(l2, num_msg(0, 0));
    assert_true(tu_event_wait(&rl2.done, TU_WAIT_MS));
    assert_int_equal(rl2.stopped, 0);

    // A trapping actor gets an Exit message and lives on.
    rec rp3, rt3;
    rec_init(&rp3, 0);
    rec_init(&rt3, 0);
    tr_actor_addr peer3 = spawn_rec(b.rt, &rp3, M_STOP_ON, NULL);
    linker li3 = {&rt3, peer3};
    tr_actor_opts trap = {.flags = TR_ACTOR_TRAP_EXIT};
    tr_actor_addr l3;
    assert_int_equal(tr_actor_spawn(b.rt, &linker_spec, &li3, &trap, &l3), TR_OK);
    send_ok(peer3, num_msg(99, TR_EPIPE));
    assert_true(tu_event_wait(&rt3.done, TU_WAIT_MS));
    assert_int_equal(rt3.exits, 1);
    assert_int_equal(rt3.last_reason, TR_EPIPE);
    assert_true(tr_actor_addr_eq(rt3.last_from, peer3));
    assert_true(tr_actor_alive(l3));
    bg_stop(&b);
    rec_fini(&rp);
    rec_fini(&rl);
    rec_fini(&rp2);
    rec_fini(&rl2);
    rec_fini(&rp3);
    rec_fini(&rt3);
}

// ---------------------------------------------------------------------------
// Names.

static void
test_actor_names(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    rec r;
    rec_init(&r, 0);
    tr_actor_opts opts = {.name = "printer"};
    tr_actor_addr a = spawn_rec(b.rt, &r, M_STOP_ON, &opts);
    tr_actor_addr got;
    assert_int_equal(tr_actor_whereis(b.rt, "printer", &got), TR_OK);
    assert_true(tr_actor_addr_eq(got, a));
    tr_actor_addr x;
    assert_int_equal(tr_actor_spawn(b.rt, &rec_spec, &(rec_state){&r, 0, TR_ACTOR_NONE}, &opts, &x),
                     TR_EEXIST);
    assert_int_equal(tr_actor_register(b.rt, "bad name", a), TR_EINVAL);
    assert_int_equal(tr_actor_register(b.rt, "", a), TR_EINVAL);
    assert_int_equal(tr_actor_whereis(b.rt, "nobody", &got), TR_ENOTFOUND);
    // The name leaves with its actor.
    send_ok(a, num_msg(99, TR_OK));
    assert_true(tu_event_wait(&r.stopped_ev, TU_WAIT_MS));
    assert_true(TU_SPIN_UNTIL(tr_actor_whereis(b.rt, "printer", &got) == TR_ENOTFOUND, TU_WAIT_MS));
    tr_actor_addr c = spawn_rec(b.rt, &r, M_PLAIN, NULL);
    assert_int_equal(tr_actor_register(b.rt, "printer", c), TR_OK);
    assert_int_equal(tr_actor_unregister(b.rt, "printer"), TR_OK);
    assert_int_equal(tr_actor_unregister(b.rt, "printer"), TR_ENOTFOUND);
    assert_int_equal(tr_actor_register(b.rt, "printer", c), TR_OK);
    bg_stop(&b);
    rec_fini(&r);
}

// ---------------------------------------------------------------------------
// Many actors, a ring of forwards, then a shutdown with all of them alive.

typedef struct ring_node {
    tr_actor_addr next;
    rec *r;
} ring_node;

static tr_err
ring_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(ring_node *)state = *(ring_node *)arg;
    return TR_OK;
}

static void
ring_receive(tr_actor *self, void *state, tr_msg *m)
{
    ring_node *st = state;
    Troupe__V1__Address *n = (Troupe__V1__Address *)num_of(m);
    if (n == NULL) {
        return;
    }
    if (n->actor == 0) {
        tu_event_set(&st->r->done);
        return;
    }
    n->actor--;
    tr_err err = tr_actor_forward(self, st->next, m);
    TU_CHECK(err == TR_OK);
}

static const tr_actor_spec ring_spec = {
    .name = "ring", .size = sizeof(ring_node), .init = ring_init, .receive = ring_receive};

static void
test_actor_ring_and_shutdown(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    enum { N = 1000, HOPS = 20000 };
    rec r;
    rec_init(&r, 0);
    tr_actor_addr first = TR_ACTOR_NONE, next = TR_ACTOR_NONE;
    // Built back to front: each node forwards to the one spawned before it;
    // the first one spawned forwards to nobody (sends fail) until closed.
    tr_actor_addr nodes[N];
    for (int i = 0; i < N; i++) {
        ring_node init = {next, &r};
        assert_int_equal(tr_actor_spawn(b.rt, &ring_spec, &init, NULL, &nodes[i]), TR_OK);
        next = nodes[i];
    }
    first = nodes[N - 1];
    // Close the ring: the last spawned is the head; nodes[0] forwards to
    // nobody, so the hop count stays below N for the ring to succeed.
    send_ok(first, num_msg(0, N - 1));
    assert_true(tu_event_wait(&r.done, TU_WAIT_MS));
    (void)HOPS;
    bg_stop(&b); // N actors still running: cancelled, nothing leaks
    rec_fini(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_actor_send_and_receive),
        cmocka_unit_test(test_actor_order_per_sender),
        cmocka_unit_test(test_actor_stale_address),
        cmocka_unit_test(test_actor_call_from_task),
        cmocka_unit_test(test_actor_call_outcomes),
        cmocka_unit_test(test_actor_request_from_actor),
        cmocka_unit_test(test_actor_bounded_mailbox),
        cmocka_unit_test(test_actor_stop_jumps_the_queue),
        cmocka_unit_test(test_actor_monitor_down_after_messages),
        cmocka_unit_test(test_actor_links),
        cmocka_unit_test(test_actor_names),
        cmocka_unit_test(test_actor_ring_and_shutdown),
    };
    return tu_run(tests);
}

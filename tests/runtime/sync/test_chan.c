// Tests for channels: the bounded MPSC tr_chan (order, backpressure, FIFO
// service of waiting senders, closing from either side, cancellation of a
// pending send, the poll budget, plain threads as senders) and tr_oneshot.
//
// The tests run on a one-worker runtime, so a task spawned by the main task
// runs only when the main task yields or waits; the comments that say "not
// yet polled" rely on that. Nothing sleeps: waits are joins, semaphores
// posted by the other side, or yields bounded by time (YIELD_UNTIL, never
// by a count of yields).
#include "../test_util.h"

// ---------------------------------------------------------------------------
// Helpers.

// Every test runs its main task on a fresh one-worker runtime
// (tu_run_main_on(tu_rt_new(), ...)): several tests rely on a task spawned
// by the main task running only when the main task yields or waits. The
// environment applies (CI runs this suite again in the deterministic mode).

// ---------------------------------------------------------------------------
// A sender task: sends the items [next, end) with tr_chan_send, reporting
// into *rep. It owns one sender reference; its drop abandons a pending send
// and releases the reference (after TR_READY, on cancel, or at shutdown).

typedef struct sender_rep {
    tr_err err;     // result of the last send (TR_OK until one fails)
    uint32_t sent;  // items sent
    uint32_t polls; // times polled
} sender_rep;

typedef struct sender_task {
    int tr_pc;
    tr_chan *ch;
    tr_chan_send_op op;
    uint32_t next;
    uint32_t end;
    tr_err err;
    sender_rep *rep;
} sender_task;

static tr_poll
sender_poll(void *arg, tr_cx *cx)
{
    sender_task *st = arg;
    st->rep->polls++;
    TR_BEGIN(st);
    while (st->next < st->end) {
        TR_AWAIT(st, tr_chan_send(st->ch, cx, &st->op, &st->next, &st->err));
        st->rep->err = st->err;
        if (st->err != TR_OK) {
            break;
        }
        st->rep->sent++;
        st->next++;
    }
    TR_END(st);
}

static void
sender_drop(void *arg)
{
    sender_task *st = arg;
    tr_chan_send_abandon(st->ch, &st->op);
    tr_chan_sender_release(st->ch);
}

static const tr_task_spec sender_spec = {
    .name = "chan-sender", .poll = sender_poll, .drop = sender_drop, .size = sizeof(sender_task)};

// spawn_sender starts a sender task with a sender reference of its own.
static tr_join
spawn_sender(tr_rt *rt, tr_chan *ch, uint32_t first, uint32_t end, sender_rep *rep)
{
    tr_chan_sender_clone(ch);
    tr_join j = TR_JOIN_NONE;
    tu_start(rt, &sender_spec, &(sender_task){.ch = ch, .next = first, .end = end, .rep = rep}, &j);
    return j;
}

// A channel receiver task: awaits one item; its drop releases the receiver.
typedef struct receiver_task {
    int tr_pc;
    tr_chan *ch;
    uint32_t item;
    tr_err err;
    uint32_t *polls;
} receiver_task;

static tr_poll
receiver_poll(void *arg, tr_cx *cx)
{
    receiver_task *st = arg;
    (*st->polls)++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    tr_cx_set_result_u64(cx, st->err);
    TR_END(st);
}

static void
receiver_drop(void *arg)
{
    receiver_task *st = arg;
    tr_chan_receiver_release(st->ch);
}

static const tr_task_spec receiver_spec = {.name = "chan-receiver",
                                           .poll = receiver_poll,
                                           .drop = receiver_drop,
                                           .size = sizeof(receiver_task)};

// ---------------------------------------------------------------------------
// Construction and the non-blocking calls (no runtime needed).

static void
test_chan_new_rejects_bad_sizes(void **state)
{
    (void)state;
    tr_chan *ch = (tr_chan *)&ch;
    assert_int_equal(tr_chan_new(0, 1, &ch), TR_EINVAL);
    assert_null(ch);
    assert_int_equal(tr_chan_new(65537, 1, &ch), TR_EINVAL);
    assert_int_equal(tr_chan_new(4, 0, &ch), TR_EINVAL);
    assert_int_equal(tr_chan_new(4, ((size_t)1 << 24) + 1, &ch), TR_EINVAL);
    assert_int_equal(tr_chan_new(4, 1, NULL), TR_EINVAL);
    // Within each limit, but a 1 TiB ring: refused, not an abort.
    assert_int_equal(tr_chan_new(65536, (size_t)1 << 24, &ch), TR_ETOOBIG);
    assert_null(ch);

    assert_int_equal(tr_chan_new(65536, 2, &ch), TR_OK);
    assert_non_null(ch);
    tr_chan_sender_release(ch);
    tr_chan_receiver_release(ch);
    assert_int_equal(tr_chan_new(1, (size_t)1 << 24, &ch), TR_OK);
    tr_chan_receiver_release(ch);
    tr_chan_sender_release(ch);

    tr_oneshot *o = (tr_oneshot *)&o;
    assert_int_equal(tr_oneshot_new(4097, &o), TR_EINVAL);
    assert_null(o);
    assert_int_equal(tr_oneshot_new(8, NULL), TR_EINVAL);
    assert_int_equal(tr_oneshot_new(4096, &o), TR_OK);
    tr_oneshot_sender_release(o);
    tr_oneshot_receiver_release(o);
}

static void
test_chan_try_send_try_recv_codes(void **state)
{
    (void)state;
    tr_chan *ch = NULL;
    uint32_t v;
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 2, &ch), TR_OK);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_EAGAIN);
    v = 1;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK);
    v = 2;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK);
    v = 3;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_EAGAIN);
    assert_int_equal(tr_chan_len(ch), 2);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_OK);
    assert_int_equal(v, 1);
    v = 3;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK); // wraps around the ring
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_OK);
    assert_int_equal(v, 2);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_OK);
    assert_int_equal(v, 3);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_EAGAIN);
    assert_int_equal(tr_chan_len(ch), 0);

    // Two sender references: the channel stays open until both are gone,
    // and the receiver drains what is buffered before it sees TR_ECLOSED.
    tr_chan_sender_clone(ch);
    v = 4;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK);
    tr_chan_sender_release(ch);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_OK);
    assert_int_equal(v, 4);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_EAGAIN);
    v = 5;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK);
    tr_chan_sender_release(ch);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_OK);
    assert_int_equal(v, 5);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_ECLOSED);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_ECLOSED);
    tr_chan_receiver_release(ch);

    // Receiver released first: sends fail, buffered items are discarded.
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 4, &ch), TR_OK);
    v = 6;
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK);
    tr_chan_receiver_release(ch);
    assert_int_equal(tr_chan_try_send(ch, &v), TR_ECLOSED);
    tr_chan_sender_release(ch);
}

// ---------------------------------------------------------------------------
// Order: one sender task, a small channel, many items.

#define ORDER_N 1000

typedef struct order_root {
    int tr_pc;
    tr_chan *ch;
    tr_join join;
    tr_outcome out;
    sender_rep rep;
    uint32_t item;
    uint32_t expect;
    tr_err err;
} order_root;

static tr_poll
order_root_poll(void *arg, tr_cx *cx)
{
    order_root *st = arg;
    TR_BEGIN(st);
    st->join = spawn_sender(tr_cx_rt(cx), st->ch, 0, ORDER_N, &st->rep);
    // Drop our own sender reference: the channel closes when the task ends.
    tr_chan_sender_release(st->ch);
    for (;;) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        if (st->err != TR_OK) {
            break;
        }
        CHECK_EQ(st, st->item, st->expect);
        st->expect++;
    }
    CHECK_EQ(st, st->err, TR_ECLOSED);
    CHECK_EQ(st, st->expect, ORDER_N);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_OK);
    CHECK_EQ(st, st->rep.sent, ORDER_N);
    CHECK_EQ(st, st->rep.err, TR_OK);
    tr_chan_receiver_release(st->ch);
    TR_END(st);
}

static const tr_task_spec order_root_spec = {
    .name = "order-root", .poll = order_root_poll, .size = sizeof(order_root)};

static void
test_chan_order_preserved(void **state)
{
    (void)state;
    order_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 4, &st.ch), TR_OK);
    tu_run_main_on(tu_rt_new(), &order_root_spec, &st);
}

// ---------------------------------------------------------------------------
// Backpressure: a send to a full channel waits, keeps the room it is given
// against newcomers, and completes once the receiver takes an item.

typedef struct bp_root {
    int tr_pc;
    tr_chan *ch;
    tr_join join;
    tr_outcome out;
    sender_rep rep;
    unsigned spins;       // the negative check's turns
    uint64_t tu_deadline; // YIELD_UNTIL
    uint32_t item;
    tr_err err;
} bp_root;

static tr_poll
bp_root_poll(void *arg, tr_cx *cx)
{
    bp_root *st = arg;
    TR_BEGIN(st);
    st->item = 10;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_OK);
    st->item = 11;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_OK);
    st->join = spawn_sender(tr_cx_rt(cx), st->ch, 12, 13, &st->rep);
    YIELD_UNTIL(st, cx, st->rep.polls >= 1);
    // More turns: the sender stays parked (not polled again, not finished).
    // A negative check, not a wait: on one worker five turns of the FIFO
    // are deterministic.
    for (st->spins = 0; st->spins < 5; st->spins++) {
        TR_YIELD(st, cx);
    }
    CHECK_EQ(st, st->rep.polls, 1);
    CHECK(st, !tr_join_is_finished(&st->join));
    CHECK_EQ(st, tr_chan_len(st->ch), 2);
    st->item = 99;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_EAGAIN);

    // Taking an item makes room for the waiting sender, not for a newcomer.
    CHECK_EQ(st, tr_chan_try_recv(st->ch, &st->item), TR_OK);
    CHECK_EQ(st, st->item, 10);
    CHECK_EQ(st, tr_chan_len(st->ch), 1);
    st->item = 99;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_EAGAIN);
    YIELD_UNTIL(st, cx, tr_join_is_finished(&st->join));
    CHECK_EQ(st, tr_chan_len(st->ch), 2);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_OK);
    CHECK_EQ(st, st->rep.sent, 1);
    CHECK_EQ(st, st->rep.polls, 2);

    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_OK);
    CHECK_EQ(st, st->item, 11);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_OK);
    CHECK_EQ(st, st->item, 12);
    tr_chan_sender_release(st->ch);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    tr_chan_receiver_release(st->ch);
    TR_END(st);
}

static const tr_task_spec bp_root_spec = {
    .name = "bp-root", .poll = bp_root_poll, .size = sizeof(bp_root)};

static void
test_chan_send_waits_when_full(void **state)
{
    (void)state;
    bp_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 2, &st.ch), TR_OK);
    tu_run_main_on(tu_rt_new(), &bp_root_spec, &st);
}

// ---------------------------------------------------------------------------
// FIFO service: senders that wait are served in the order they arrived.

#define FIFO_SENDERS 5

typedef struct fifo_root {
    int tr_pc;
    tr_chan *ch;
    tr_join join[FIFO_SENDERS];
    sender_rep rep[FIFO_SENDERS];
    tr_outcome out;
    unsigned i;
    uint64_t tu_deadline;
    uint32_t item;
    tr_err err;
} fifo_root;

static tr_poll
fifo_root_poll(void *arg, tr_cx *cx)
{
    fifo_root *st = arg;
    TR_BEGIN(st);
    st->item = 0;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_OK);
    // Sender i sends the item i + 1; each is parked before the next starts.
    for (st->i = 0; st->i < FIFO_SENDERS; st->i++) {
        st->join[st->i] = spawn_sender(tr_cx_rt(cx), st->ch, st->i + 1, st->i + 2, &st->rep[st->i]);
        YIELD_UNTIL(st, cx, st->rep[st->i].polls >= 1);
    }
    for (st->i = 0; st->i <= FIFO_SENDERS; st->i++) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        CHECK_EQ(st, st->err, TR_OK);
        CHECK_EQ(st, st->item, st->i);
    }
    for (st->i = 0; st->i < FIFO_SENDERS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        CHECK_EQ(st, st->out.err, TR_OK);
        CHECK_EQ(st, st->rep[st->i].sent, 1);
    }
    tr_chan_sender_release(st->ch);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    tr_chan_receiver_release(st->ch);
    TR_END(st);
}

static const tr_task_spec fifo_root_spec = {
    .name = "fifo-root", .poll = fifo_root_poll, .size = sizeof(fifo_root)};

static void
test_chan_waiting_senders_served_fifo(void **state)
{
    (void)state;
    fifo_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 1, &st.ch), TR_OK);
    tu_run_main_on(tu_rt_new(), &fifo_root_spec, &st);
}

// ---------------------------------------------------------------------------
// Closing by the last sender: buffered items first, then TR_ECLOSED; a
// receiver waiting on an empty channel is woken by the last release.

#define CLOSE_SENDERS 3
#define CLOSE_ITEMS 50

typedef struct lastsend_root {
    int tr_pc;
    tr_chan *ch;
    tr_chan *ch2;
    tr_chan *ch3;
    tr_join join3;
    sender_rep rep3;
    tr_join join[CLOSE_SENDERS];
    sender_rep rep[CLOSE_SENDERS];
    uint32_t next_seq[CLOSE_SENDERS];
    tr_outcome out;
    unsigned i;
    uint32_t got;
    uint32_t item;
    tr_err err;
} lastsend_root;

static tr_poll
lastsend_root_poll(void *arg, tr_cx *cx)
{
    lastsend_root *st = arg;
    TR_BEGIN(st);
    // Three buffered items, then the only sender goes away.
    for (st->item = 1; st->item <= 3; st->item++) {
        CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_OK);
    }
    tr_chan_sender_release(st->ch);
    for (st->i = 1; st->i <= 3; st->i++) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        CHECK_EQ(st, st->err, TR_OK);
        CHECK_EQ(st, st->item, st->i);
    }
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    tr_chan_receiver_release(st->ch);

    // Several sender tasks; the root drops its own reference at once, and
    // the channel closes when the last task's drop releases its reference.
    for (st->i = 0; st->i < CLOSE_SENDERS; st->i++) {
        st->join[st->i] = spawn_sender(tr_cx_rt(cx), st->ch2, st->i << 16,
                                       (st->i << 16) + CLOSE_ITEMS, &st->rep[st->i]);
    }
    tr_chan_sender_release(st->ch2);
    for (;;) {
        TR_AWAIT(st, tr_chan_recv(st->ch2, cx, &st->item, &st->err));
        if (st->err != TR_OK) {
            break;
        }
        CHECK(st, (st->item >> 16) < CLOSE_SENDERS);
        CHECK_EQ(st, st->item & 0xffff, st->next_seq[st->item >> 16]);
        st->next_seq[st->item >> 16]++;
        st->got++;
    }
    CHECK_EQ(st, st->err, TR_ECLOSED);
    CHECK_EQ(st, st->got, CLOSE_SENDERS * CLOSE_ITEMS);
    for (st->i = 0; st->i < CLOSE_SENDERS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        CHECK_EQ(st, st->out.err, TR_OK);
        CHECK_EQ(st, st->rep[st->i].sent, CLOSE_ITEMS);
    }
    tr_chan_receiver_release(st->ch2);

    // The receiver is parked on an empty channel when the last sender (a
    // task that sends nothing) goes away: the release must wake it.
    st->join3 = spawn_sender(tr_cx_rt(cx), st->ch3, 0, 0, &st->rep3);
    tr_chan_sender_release(st->ch3);
    CHECK_EQ(st, st->rep3.polls, 0);
    TR_AWAIT(st, tr_chan_recv(st->ch3, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    CHECK_EQ(st, st->rep3.polls, 1);
    TR_AWAIT(st, tr_join_poll(&st->join3, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_OK);
    tr_chan_receiver_release(st->ch3);
    TR_END(st);
}

static const tr_task_spec lastsend_root_spec = {
    .name = "lastsend-root", .poll = lastsend_root_poll, .size = sizeof(lastsend_root)};

static void
test_chan_last_sender_closes_after_drain(void **state)
{
    (void)state;
    lastsend_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 8, &st.ch), TR_OK);
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 8, &st.ch2), TR_OK);
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 8, &st.ch3), TR_OK);
    tu_run_main_on(tu_rt_new(), &lastsend_root_spec, &st);
}

// ---------------------------------------------------------------------------
// Closing by the receiver: pending senders and later ones get TR_ECLOSED.

typedef struct rxclose_root {
    int tr_pc;
    tr_chan *ch;
    tr_join join[3];
    sender_rep rep[3];
    tr_outcome out;
    unsigned i;
    uint64_t tu_deadline;
    uint32_t item;
} rxclose_root;

static tr_poll
rxclose_root_poll(void *arg, tr_cx *cx)
{
    rxclose_root *st = arg;
    TR_BEGIN(st);
    st->item = 1;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_OK);
    for (st->i = 0; st->i < 2; st->i++) {
        st->join[st->i] =
            spawn_sender(tr_cx_rt(cx), st->ch, 100 + st->i, 101 + st->i, &st->rep[st->i]);
        YIELD_UNTIL(st, cx, st->rep[st->i].polls >= 1);
    }
    CHECK(st, !tr_join_is_finished(&st->join[0]));
    CHECK(st, !tr_join_is_finished(&st->join[1]));
    tr_chan_receiver_release(st->ch);
    for (st->i = 0; st->i < 2; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        CHECK_EQ(st, st->out.err, TR_OK);
        CHECK_EQ(st, st->rep[st->i].err, TR_ECLOSED);
        CHECK_EQ(st, st->rep[st->i].sent, 0);
    }
    st->item = 2;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_ECLOSED);
    // A send that starts after the close fails at once.
    st->join[2] = spawn_sender(tr_cx_rt(cx), st->ch, 200, 201, &st->rep[2]);
    TR_AWAIT(st, tr_join_poll(&st->join[2], cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_OK);
    CHECK_EQ(st, st->rep[2].err, TR_ECLOSED);
    CHECK_EQ(st, st->rep[2].polls, 1);
    tr_chan_sender_release(st->ch);
    TR_END(st);
}

static const tr_task_spec rxclose_root_spec = {
    .name = "rxclose-root", .poll = rxclose_root_poll, .size = sizeof(rxclose_root)};

static void
test_chan_receiver_close_fails_senders(void **state)
{
    (void)state;
    rxclose_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 1, &st.ch), TR_OK);
    tu_run_main_on(tu_rt_new(), &rxclose_root_spec, &st);
}

// A receiver task cancelled while it waits releases the receiver (drop):
// senders then see TR_ECLOSED.

typedef struct rxcancel_root {
    int tr_pc;
    tr_chan *ch;
    tr_join join;
    tr_outcome out;
    uint32_t polls;
    uint64_t tu_deadline;
    uint32_t item;
} rxcancel_root;

static tr_poll
rxcancel_root_poll(void *arg, tr_cx *cx)
{
    rxcancel_root *st = arg;
    TR_BEGIN(st);
    st->join = tu_spawn(cx, &receiver_spec, &(receiver_task){.ch = st->ch, .polls = &st->polls});
    YIELD_UNTIL(st, cx, st->polls >= 1);
    CHECK_EQ(st, tr_task_abort(&st->join), TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_ECANCELED);
    CHECK_EQ(st, st->polls, 1);
    st->item = 1;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_ECLOSED);
    tr_chan_sender_release(st->ch);
    TR_END(st);
}

static const tr_task_spec rxcancel_root_spec = {
    .name = "rxcancel-root", .poll = rxcancel_root_poll, .size = sizeof(rxcancel_root)};

static void
test_chan_receiver_cancelled_while_waiting(void **state)
{
    (void)state;
    rxcancel_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 1, &st.ch), TR_OK);
    tu_run_main_on(tu_rt_new(), &rxcancel_root_spec, &st);
}

// ---------------------------------------------------------------------------
// Cancelling a sender with a pending send (its drop calls
// tr_chan_send_abandon) leaves the other senders working: whether it was
// still in line, or had already been granted room and woken.

typedef struct cancel_root {
    int tr_pc;
    tr_chan *ch;
    bool granted; // cancel after the receiver granted the sender a slot
    tr_join join[3];
    sender_rep rep[3];
    tr_outcome out;
    unsigned i;
    uint64_t tu_deadline;
    uint32_t item;
    tr_err err;
} cancel_root;

static tr_poll
cancel_root_poll(void *arg, tr_cx *cx)
{
    cancel_root *st = arg;
    TR_BEGIN(st);
    st->item = 1;
    CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_OK);
    // Senders 0, 1, 2 send 100, 101, 102 and wait in that order.
    for (st->i = 0; st->i < 3; st->i++) {
        st->join[st->i] =
            spawn_sender(tr_cx_rt(cx), st->ch, 100 + st->i, 101 + st->i, &st->rep[st->i]);
        YIELD_UNTIL(st, cx, st->rep[st->i].polls >= 1);
    }
    if (st->granted) {
        // Take an item: sender 0 is granted the slot and woken, but with one
        // worker it is not polled before we cancel it. Its drop must hand
        // the slot (and the wake-up) to sender 1.
        CHECK_EQ(st, tr_chan_try_recv(st->ch, &st->item), TR_OK);
        CHECK_EQ(st, st->item, 1);
        CHECK_EQ(st, tr_task_abort(&st->join[0]), TR_OK);
        st->item = 99;
        CHECK_EQ(st, tr_chan_try_send(st->ch, &st->item), TR_EAGAIN);
    } else {
        CHECK_EQ(st, tr_task_abort(&st->join[0]), TR_OK);
        TR_AWAIT(st, tr_join_poll(&st->join[0], cx, &st->out));
        CHECK_EQ(st, st->out.err, TR_ECANCELED);
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        CHECK_EQ(st, st->err, TR_OK);
        CHECK_EQ(st, st->item, 1);
    }
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_OK);
    CHECK_EQ(st, st->item, 101);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_OK);
    CHECK_EQ(st, st->item, 102);
    if (st->granted) {
        TR_AWAIT(st, tr_join_poll(&st->join[0], cx, &st->out));
        CHECK_EQ(st, st->out.err, TR_ECANCELED);
    }
    CHECK_EQ(st, st->rep[0].sent, 0);
    CHECK_EQ(st, st->rep[0].polls, 1);
    for (st->i = 1; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        CHECK_EQ(st, st->out.err, TR_OK);
        CHECK_EQ(st, st->rep[st->i].sent, 1);
    }
    CHECK_EQ(st, tr_chan_len(st->ch), 0);
    tr_chan_sender_release(st->ch);
    TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    tr_chan_receiver_release(st->ch);
    TR_END(st);
}

static const tr_task_spec cancel_root_spec = {
    .name = "cancel-root", .poll = cancel_root_poll, .size = sizeof(cancel_root)};

static void
run_cancel(bool granted)
{
    cancel_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 1, &st.ch), TR_OK);
    st.granted = granted;
    tu_run_main_on(tu_rt_new(), &cancel_root_spec, &st);
}

static void
test_chan_cancel_waiting_sender(void **state)
{
    (void)state;
    run_cancel(false);
}

static void
test_chan_cancel_granted_sender_passes_room_on(void **state)
{
    (void)state;
    run_cancel(true);
}

// ---------------------------------------------------------------------------
// The poll budget: a task that receives (or sends) 1000 items without ever
// waiting is still preempted; no poll gets more than the budget.

#define BUDGET_ITEMS 1000

typedef struct budget_root {
    int tr_pc;
    tr_chan *ch;
    tr_chan_send_op op;
    uint32_t limit; // the configured budget
    uint32_t polls;
    uint32_t this_poll;
    uint32_t max_per_poll;
    uint32_t got;
    uint32_t item;
    tr_err err;
} budget_root;

static tr_poll
budget_recv_poll(void *arg, tr_cx *cx)
{
    budget_root *st = arg;
    st->polls++;
    st->this_poll = 0;
    TR_BEGIN(st);
    while (st->got < BUDGET_ITEMS) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        CHECK_EQ(st, st->err, TR_OK);
        CHECK_EQ(st, st->item, st->got);
        st->got++;
        st->this_poll++;
        if (st->this_poll > st->max_per_poll) {
            st->max_per_poll = st->this_poll;
        }
    }
    CHECK(st, st->max_per_poll >= 1);
    CHECK(st, st->max_per_poll <= st->limit);
    CHECK(st, st->polls >= (BUDGET_ITEMS + st->limit - 1) / st->limit);
    TR_END(st);
}

static const tr_task_spec budget_recv_spec = {
    .name = "budget-recv", .poll = budget_recv_poll, .size = sizeof(budget_root)};

static tr_poll
budget_send_poll(void *arg, tr_cx *cx)
{
    budget_root *st = arg;
    st->polls++;
    st->this_poll = 0;
    TR_BEGIN(st);
    while (st->got < BUDGET_ITEMS) {
        // The channel holds all the items: the send never waits.
        TR_AWAIT(st, tr_chan_send(st->ch, cx, &st->op, &st->got, &st->err));
        CHECK_EQ(st, st->err, TR_OK);
        st->got++;
        st->this_poll++;
        if (st->this_poll > st->max_per_poll) {
            st->max_per_poll = st->this_poll;
        }
    }
    CHECK(st, st->max_per_poll >= 1);
    CHECK(st, st->max_per_poll <= st->limit);
    CHECK(st, st->polls >= (BUDGET_ITEMS + st->limit - 1) / st->limit);
    TR_END(st);
}

static const tr_task_spec budget_send_spec = {
    .name = "budget-send", .poll = budget_send_poll, .size = sizeof(budget_root)};

static uint32_t
default_budget(void)
{
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    assert_int_equal(cfg.budget, 128);
    return cfg.budget;
}

static void
test_chan_recv_charges_budget(void **state)
{
    (void)state;
    budget_root st = {0};
    st.limit = default_budget();
    assert_int_equal(tr_chan_new(sizeof(uint32_t), BUDGET_ITEMS, &st.ch), TR_OK);
    for (uint32_t i = 0; i < BUDGET_ITEMS; i++) {
        assert_int_equal(tr_chan_try_send(st.ch, &i), TR_OK);
    }
    tu_run_main_on(tu_rt_new(), &budget_recv_spec, &st);
    assert_int_equal(tr_chan_len(st.ch), 0);
    tr_chan_sender_release(st.ch);
    tr_chan_receiver_release(st.ch);
}

static void
test_chan_send_charges_budget(void **state)
{
    (void)state;
    budget_root st = {0};
    st.limit = default_budget();
    assert_int_equal(tr_chan_new(sizeof(uint32_t), BUDGET_ITEMS, &st.ch), TR_OK);
    tr_chan *ch = st.ch;
    tu_run_main_on(tu_rt_new(), &budget_send_spec, &st);
    assert_int_equal(tr_chan_len(ch), BUDGET_ITEMS);
    for (uint32_t i = 0; i < BUDGET_ITEMS; i++) {
        uint32_t v;
        assert_int_equal(tr_chan_try_recv(ch, &v), TR_OK);
        assert_int_equal(v, i);
    }
    tr_chan_sender_release(ch);
    tr_chan_receiver_release(ch);
}

// ---------------------------------------------------------------------------
// Plain threads as senders: they use tr_chan_try_send while a task awaits.
// On TR_EAGAIN a producer waits on its semaphore, which the receiving task
// posts for every item it takes, so each producer waits at most once per
// item received: bounded, and never a sleep. Each wait ends after
// TU_WAIT_MS at the latest, failing the test instead of hanging it.

#define XT_PRODUCERS 3
#define XT_ITEMS 20000
#define XT_CAP 8

typedef struct xt_producer {
    pthread_t thread;
    tr_chan *ch; // a sender reference, released when done
    uint32_t id;
    sem_t room;
    tr_err bad;    // an unexpected try_send result, or TR_OK
    uint32_t full; // times it found the channel full
} xt_producer;

static void *
xt_producer_main(void *arg)
{
    xt_producer *p = arg;
    uint32_t seq = 0;
    while (seq < XT_ITEMS) {
        uint32_t item = p->id << 24 | seq;
        tr_err e = tr_chan_try_send(p->ch, &item);
        if (e == TR_OK) {
            seq++;
        } else if (e == TR_EAGAIN) {
            p->full++;
            if (!tu_sem_wait_ms(&p->room, TU_WAIT_MS)) {
                p->bad = TR_ETIMEDOUT; // the receiver stopped taking items
                break;
            }
        } else {
            p->bad = e;
            break;
        }
    }
    tr_chan_sender_release(p->ch);
    return NULL;
}

typedef struct xt_root {
    int tr_pc;
    tr_chan *ch;
    xt_producer *prod;
    uint32_t next_seq[XT_PRODUCERS];
    uint32_t got;
    uint32_t item;
    tr_err err;
} xt_root;

static tr_poll
xt_root_poll(void *arg, tr_cx *cx)
{
    xt_root *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        if (st->err != TR_OK) {
            break;
        }
        CHECK(st, (st->item >> 24) < XT_PRODUCERS);
        CHECK_EQ(st, st->item & 0xffffff, st->next_seq[st->item >> 24]);
        st->next_seq[st->item >> 24]++;
        st->got++;
        for (unsigned i = 0; i < XT_PRODUCERS; i++) {
            sem_post(&st->prod[i].room);
        }
    }
    CHECK_EQ(st, st->err, TR_ECLOSED);
    CHECK_EQ(st, st->got, XT_PRODUCERS * XT_ITEMS);
    tr_chan_receiver_release(st->ch);
    TR_END(st);
}

static const tr_task_spec xt_root_spec = {
    .name = "xt-root", .poll = xt_root_poll, .size = sizeof(xt_root)};

static void
test_chan_cross_thread_try_send(void **state)
{
    (void)state;
    xt_producer prod[XT_PRODUCERS];
    xt_root st = {0};
    assert_int_equal(tr_chan_new(sizeof(uint32_t), XT_CAP, &st.ch), TR_OK);
    st.prod = prod;
    memset(prod, 0, sizeof prod);
    for (uint32_t i = 0; i < XT_PRODUCERS; i++) {
        prod[i].ch = st.ch;
        prod[i].id = i;
        assert_int_equal(sem_init(&prod[i].room, 0, 0), 0);
        tr_chan_sender_clone(st.ch);
    }
    tr_chan_sender_release(st.ch); // the producers hold the only references
    for (uint32_t i = 0; i < XT_PRODUCERS; i++) {
        assert_int_equal(pthread_create(&prod[i].thread, NULL, xt_producer_main, &prod[i]), 0);
    }
    // No watchdog: progress depends on the producer threads.
    tu_run_main_on(tu_rt_new(), &xt_root_spec, &st);
    for (uint32_t i = 0; i < XT_PRODUCERS; i++) {
        assert_int_equal(pthread_join(prod[i].thread, NULL), 0);
        assert_int_equal(prod[i].bad, TR_OK);
        sem_destroy(&prod[i].room);
    }
}

// Both ends released at once from two threads, many times: exactly one of
// them frees the channel (ASan and TSan check), with items in flight.

#define RACE_ROUNDS 500

static void *
race_sender_main(void *arg)
{
    tr_chan *ch = arg;
    uint32_t v = 7;
    tr_err e = tr_chan_try_send(ch, &v);
    if (e != TR_OK && e != TR_ECLOSED) {
        return (void *)1;
    }
    tr_chan_sender_release(ch);
    return NULL;
}

static void *
race_oneshot_main(void *arg)
{
    tr_oneshot *o = arg;
    uint64_t v = 7;
    tr_err e = tr_oneshot_send(o, &v);
    return (e == TR_OK || e == TR_ECLOSED) ? NULL : (void *)1;
}

static void
test_chan_release_race(void **state)
{
    (void)state;
    for (unsigned r = 0; r < RACE_ROUNDS; r++) {
        tr_chan *ch = NULL;
        tr_oneshot *o = NULL;
        pthread_t t1, t2;
        void *res;
        uint32_t v;
        uint64_t w;
        assert_int_equal(tr_chan_new(sizeof(uint32_t), 1, &ch), TR_OK);
        assert_int_equal(tr_oneshot_new(sizeof(uint64_t), &o), TR_OK);
        assert_int_equal(pthread_create(&t1, NULL, race_sender_main, ch), 0);
        assert_int_equal(pthread_create(&t2, NULL, race_oneshot_main, o), 0);
        if (r % 2 == 0) {
            // Take what has arrived, if anything, before releasing.
            (void)tr_chan_try_recv(ch, &v);
            if (tr_oneshot_try_recv(o, &w) == TR_EAGAIN) {
                tr_oneshot_receiver_release(o);
            }
        } else {
            tr_oneshot_receiver_release(o);
        }
        tr_chan_receiver_release(ch);
        assert_int_equal(pthread_join(t1, &res), 0);
        assert_null(res);
        assert_int_equal(pthread_join(t2, &res), 0);
        assert_null(res);
    }
}

// ---------------------------------------------------------------------------
// Oneshot tasks: a sender that yields `yields` times, then sends value (or,
// when !send, just ends; its drop releases the sender end), and a receiver.

typedef struct os_sender {
    int tr_pc;
    tr_oneshot *o; // the sender end; NULL once used
    uint64_t value;
    uint32_t yields;
    bool send;
    tr_err err;
} os_sender;

static tr_poll
os_sender_poll(void *arg, tr_cx *cx)
{
    os_sender *st = arg;
    TR_BEGIN(st);
    while (st->yields > 0) {
        st->yields--;
        TR_YIELD(st, cx);
    }
    if (st->send) {
        st->err = tr_oneshot_send(st->o, &st->value);
        st->o = NULL;
        tr_cx_set_result_u64(cx, (uint64_t)st->err);
    }
    TR_END(st);
}

static void
os_sender_drop(void *arg)
{
    os_sender *st = arg;
    if (st->o != NULL) {
        tr_oneshot_sender_release(st->o);
    }
}

static const tr_task_spec os_sender_spec = {.name = "oneshot-sender",
                                            .poll = os_sender_poll,
                                            .drop = os_sender_drop,
                                            .size = sizeof(os_sender)};

static tr_join
spawn_os_sender(tr_rt *rt, tr_oneshot *o, uint64_t value, uint32_t yields, bool send)
{
    tr_join j = TR_JOIN_NONE;
    tu_start(rt, &os_sender_spec,
             &(os_sender){.o = o, .value = value, .yields = yields, .send = send}, &j);
    return j;
}

typedef struct os_receiver {
    int tr_pc;
    tr_oneshot *o; // the receiver end; NULL once used
    uint64_t value;
    tr_err err;
    uint32_t *polls;
} os_receiver;

static tr_poll
os_receiver_poll(void *arg, tr_cx *cx)
{
    os_receiver *st = arg;
    (*st->polls)++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_oneshot_recv(st->o, cx, &st->value, &st->err));
    st->o = NULL;
    tr_cx_set_result_u64(cx, st->err == TR_OK ? st->value : UINT64_MAX);
    TR_END(st);
}

static void
os_receiver_drop(void *arg)
{
    os_receiver *st = arg;
    if (st->o != NULL) {
        tr_oneshot_receiver_release(st->o);
    }
}

static const tr_task_spec os_receiver_spec = {.name = "oneshot-receiver",
                                              .poll = os_receiver_poll,
                                              .drop = os_receiver_drop,
                                              .size = sizeof(os_receiver)};

typedef struct os_root {
    int tr_pc;
    tr_oneshot *o;
    tr_join join;
    tr_outcome out;
    uint64_t value;
    uint32_t polls;
    uint64_t tu_deadline;
    tr_err err;
} os_root;

static tr_poll
os_send_recv_poll(void *arg, tr_cx *cx)
{
    os_root *st = arg;
    TR_BEGIN(st);
    // Sent before anyone waits: ready at once.
    CHECK_EQ(st, tr_oneshot_new(sizeof(uint64_t), &st->o), TR_OK);
    st->value = 42;
    CHECK_EQ(st, tr_oneshot_send(st->o, &st->value), TR_OK);
    st->value = 0;
    CHECK_EQ(st, tr_oneshot_recv(st->o, cx, &st->value, &st->err), TR_READY);
    CHECK_EQ(st, st->err, TR_OK);
    CHECK_EQ(st, st->value, 42);

    // Sent by another task while we wait.
    CHECK_EQ(st, tr_oneshot_new(sizeof(uint64_t), &st->o), TR_OK);
    st->join = spawn_os_sender(tr_cx_rt(cx), st->o, 43, 3, true);
    TR_AWAIT(st, tr_oneshot_recv(st->o, cx, &st->value, &st->err));
    CHECK_EQ(st, st->err, TR_OK);
    CHECK_EQ(st, st->value, 43);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_OK);
    CHECK_EQ(st, st->out.value.u64, TR_OK);
    TR_END(st);
}

static const tr_task_spec os_send_recv_spec = {
    .name = "os-send-recv", .poll = os_send_recv_poll, .size = sizeof(os_root)};

static void
test_oneshot_send_recv(void **state)
{
    (void)state;
    os_root st = {0};
    tu_run_main_on(tu_rt_new(), &os_send_recv_spec, &st);
}

static tr_poll
os_sender_dropped_poll(void *arg, tr_cx *cx)
{
    os_root *st = arg;
    TR_BEGIN(st);
    // The sender task ends without sending.
    CHECK_EQ(st, tr_oneshot_new(sizeof(uint64_t), &st->o), TR_OK);
    st->join = spawn_os_sender(tr_cx_rt(cx), st->o, 1, 2, false);
    TR_AWAIT(st, tr_oneshot_recv(st->o, cx, &st->value, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_OK);

    // The sender task is cancelled before it sends.
    CHECK_EQ(st, tr_oneshot_new(sizeof(uint64_t), &st->o), TR_OK);
    st->join = spawn_os_sender(tr_cx_rt(cx), st->o, 1, 1000000, true);
    TR_YIELD(st, cx);
    CHECK_EQ(st, tr_task_abort(&st->join), TR_OK);
    TR_AWAIT(st, tr_oneshot_recv(st->o, cx, &st->value, &st->err));
    CHECK_EQ(st, st->err, TR_ECLOSED);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_ECANCELED);

    // Released before the receiver looks.
    CHECK_EQ(st, tr_oneshot_new(sizeof(uint64_t), &st->o), TR_OK);
    tr_oneshot_sender_release(st->o);
    CHECK_EQ(st, tr_oneshot_recv(st->o, cx, &st->value, &st->err), TR_READY);
    CHECK_EQ(st, st->err, TR_ECLOSED);
    TR_END(st);
}

static const tr_task_spec os_sender_dropped_spec = {
    .name = "os-sender-dropped", .poll = os_sender_dropped_poll, .size = sizeof(os_root)};

static void
test_oneshot_sender_dropped_closes(void **state)
{
    (void)state;
    os_root st = {0};
    tu_run_main_on(tu_rt_new(), &os_sender_dropped_spec, &st);
}

static tr_poll
os_receiver_dropped_poll(void *arg, tr_cx *cx)
{
    os_root *st = arg;
    TR_BEGIN(st);
    // A receiver task waits, is cancelled (its drop releases the receiver
    // end), then the send reports TR_ECLOSED and frees the oneshot.
    CHECK_EQ(st, tr_oneshot_new(sizeof(uint64_t), &st->o), TR_OK);
    st->join = tu_spawn(cx, &os_receiver_spec, &(os_receiver){.o = st->o, .polls = &st->polls});
    YIELD_UNTIL(st, cx, st->polls >= 1);
    CHECK_EQ(st, tr_task_abort(&st->join), TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->join, cx, &st->out));
    CHECK_EQ(st, st->out.err, TR_ECANCELED);
    CHECK_EQ(st, st->polls, 1);
    st->value = 5;
    CHECK_EQ(st, tr_oneshot_send(st->o, &st->value), TR_ECLOSED);
    TR_END(st);
}

static const tr_task_spec os_receiver_dropped_spec = {
    .name = "os-receiver-dropped", .poll = os_receiver_dropped_poll, .size = sizeof(os_root)};

static void
test_oneshot_receiver_dropped_send_fails(void **state)
{
    (void)state;
    // Without a runtime.
    tr_oneshot *o = NULL;
    uint64_t v = 1;
    assert_int_equal(tr_oneshot_new(sizeof v, &o), TR_OK);
    tr_oneshot_receiver_release(o);
    assert_int_equal(tr_oneshot_send(o, &v), TR_ECLOSED);

    os_root st = {0};
    tu_run_main_on(tu_rt_new(), &os_receiver_dropped_spec, &st);
}

static void
test_oneshot_try_recv_codes(void **state)
{
    (void)state;
    tr_oneshot *o = NULL;
    uint64_t v = 0;
    assert_int_equal(tr_oneshot_new(sizeof v, &o), TR_OK);
    assert_int_equal(tr_oneshot_try_recv(o, &v), TR_EAGAIN);
    assert_int_equal(tr_oneshot_try_recv(o, &v), TR_EAGAIN);
    v = 9;
    assert_int_equal(tr_oneshot_send(o, &v), TR_OK);
    v = 0;
    assert_int_equal(tr_oneshot_try_recv(o, &v), TR_OK);
    assert_int_equal(v, 9);

    assert_int_equal(tr_oneshot_new(sizeof v, &o), TR_OK);
    tr_oneshot_sender_release(o);
    assert_int_equal(tr_oneshot_try_recv(o, &v), TR_ECLOSED);

    // A value nobody takes is dropped with the receiver end.
    assert_int_equal(tr_oneshot_new(sizeof v, &o), TR_OK);
    assert_int_equal(tr_oneshot_send(o, &v), TR_OK);
    tr_oneshot_receiver_release(o);

    // A zero-size oneshot is a pure signal.
    assert_int_equal(tr_oneshot_new(0, &o), TR_OK);
    assert_int_equal(tr_oneshot_send(o, NULL), TR_OK);
    assert_int_equal(tr_oneshot_try_recv(o, NULL), TR_OK);
}

// A task awaiting many oneshots that are all ready is still preempted.

#define OS_BUDGET_N 300

typedef struct os_budget_root {
    int tr_pc;
    tr_oneshot *o[OS_BUDGET_N];
    uint32_t limit;
    uint32_t i;
    uint32_t polls;
    uint32_t this_poll;
    uint32_t max_per_poll;
    uint32_t value;
    tr_err err;
} os_budget_root;

static tr_poll
os_budget_poll(void *arg, tr_cx *cx)
{
    os_budget_root *st = arg;
    st->polls++;
    st->this_poll = 0;
    TR_BEGIN(st);
    for (st->i = 0; st->i < OS_BUDGET_N; st->i++) {
        TR_AWAIT(st, tr_oneshot_recv(st->o[st->i], cx, &st->value, &st->err));
        CHECK_EQ(st, st->err, TR_OK);
        CHECK_EQ(st, st->value, st->i);
        st->this_poll++;
        if (st->this_poll > st->max_per_poll) {
            st->max_per_poll = st->this_poll;
        }
    }
    CHECK(st, st->max_per_poll <= st->limit);
    CHECK(st, st->polls >= (OS_BUDGET_N + st->limit - 1) / st->limit);
    TR_END(st);
}

static const tr_task_spec os_budget_spec = {
    .name = "os-budget", .poll = os_budget_poll, .size = sizeof(os_budget_root)};

static void
test_oneshot_recv_charges_budget(void **state)
{
    (void)state;
    static os_budget_root st;
    memset(&st, 0, sizeof st);
    st.limit = default_budget();
    for (uint32_t i = 0; i < OS_BUDGET_N; i++) {
        assert_int_equal(tr_oneshot_new(sizeof(uint32_t), &st.o[i]), TR_OK);
        assert_int_equal(tr_oneshot_send(st.o[i], &i), TR_OK);
    }
    tu_run_main_on(tu_rt_new(), &os_budget_spec, &st);
}

// A plain thread sends (or drops) oneshots while a task awaits them in turn.

#define XT_ONESHOTS 2000

// Shared by the test, the thread and the task; outlives both.
typedef struct xt_os_shared {
    tr_oneshot *o[XT_ONESHOTS];
    int bad; // set by the thread on an unexpected send result
} xt_os_shared;

typedef struct xt_os {
    int tr_pc;
    xt_os_shared *sh;
    uint32_t i;
    uint64_t value;
    tr_err err;
} xt_os;

static bool
xt_os_dropped(uint32_t i)
{
    return i % 3 == 2;
}

static void *
xt_os_thread(void *arg)
{
    xt_os_shared *sh = arg;
    for (uint32_t i = 0; i < XT_ONESHOTS; i++) {
        if (xt_os_dropped(i)) {
            tr_oneshot_sender_release(sh->o[i]);
        } else {
            uint64_t v = (uint64_t)i * 7;
            if (tr_oneshot_send(sh->o[i], &v) != TR_OK) {
                sh->bad = 1;
            }
        }
    }
    return NULL;
}

static tr_poll
xt_os_poll(void *arg, tr_cx *cx)
{
    xt_os *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < XT_ONESHOTS; st->i++) {
        TR_AWAIT(st, tr_oneshot_recv(st->sh->o[st->i], cx, &st->value, &st->err));
        if (xt_os_dropped(st->i)) {
            CHECK_EQ(st, st->err, TR_ECLOSED);
        } else {
            CHECK_EQ(st, st->err, TR_OK);
            CHECK_EQ(st, st->value, (uint64_t)st->i * 7);
        }
    }
    TR_END(st);
}

static const tr_task_spec xt_os_spec = {
    .name = "xt-oneshot", .poll = xt_os_poll, .size = sizeof(xt_os)};

static void
test_oneshot_cross_thread_send(void **state)
{
    (void)state;
    static xt_os_shared sh;
    memset(&sh, 0, sizeof sh);
    xt_os st = {0};
    st.sh = &sh;
    for (uint32_t i = 0; i < XT_ONESHOTS; i++) {
        assert_int_equal(tr_oneshot_new(sizeof(uint64_t), &sh.o[i]), TR_OK);
    }
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, xt_os_thread, &sh), 0);
    tu_run_main_on(tu_rt_new(), &xt_os_spec, &st);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(sh.bad, 0);
}

// The one would-block code: each try_ function here that would have had to
// wait says TR_EAGAIN, and a closed end still says TR_ECLOSED.
static void
test_chan_try_would_block_is_eagain(void **state)
{
    (void)state;
    uint32_t v = 7;
    tr_chan *ch = NULL;
    assert_int_equal(tr_chan_new(sizeof v, 1, &ch), TR_OK);
    assert_int_equal(tr_chan_try_recv(ch, &v), TR_EAGAIN); // empty
    assert_int_equal(tr_chan_try_send(ch, &v), TR_OK);
    assert_int_equal(tr_chan_try_send(ch, &v), TR_EAGAIN); // full
    tr_chan_receiver_release(ch);
    assert_int_equal(tr_chan_try_send(ch, &v), TR_ECLOSED);
    tr_chan_sender_release(ch);

    tr_oneshot *o = NULL;
    assert_int_equal(tr_oneshot_new(sizeof v, &o), TR_OK);
    assert_int_equal(tr_oneshot_try_recv(o, &v), TR_EAGAIN); // nothing sent yet
    tr_oneshot_sender_release(o);
    assert_int_equal(tr_oneshot_try_recv(o, &v), TR_ECLOSED); // receiver released
}

// Op reuse: a tr_chan_send_op is back to its zeroed state when tr_chan_send
// returns TR_READY, so two sends into a full channel on one op both wait
// for room and both arrive, in order.

typedef struct reuse_rx {
    int tr_pc;
    tr_chan *ch;
    uint32_t v, want;
    tr_err err;
} reuse_rx;

static tr_poll
reuse_rx_poll(void *arg, tr_cx *cx)
{
    reuse_rx *st = arg;
    TR_BEGIN(st);
    for (st->want = 0; st->want < 3; st->want++) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->v, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        CHECK_EQ(st, st->v, st->want);
    }
    TR_END(st);
}

static const tr_task_spec reuse_rx_spec = {
    .name = "reuse_rx", .poll = reuse_rx_poll, .size = sizeof(reuse_rx)};

typedef struct reuse_tx {
    int tr_pc;
    tr_chan *ch;
    tr_join rj;
    tr_outcome ro;
    tr_chan_send_op op;
    uint32_t v;
    tr_err err;
} reuse_tx;

static tr_poll
reuse_tx_poll(void *arg, tr_cx *cx)
{
    reuse_tx *st = arg;
    TR_BEGIN(st);
    st->v = 0;
    CHECK_ERR(st, tr_chan_try_send(st->ch, &st->v), TR_OK); // now full
    st->rj = tu_spawn(cx, &reuse_rx_spec, &(reuse_rx){.ch = st->ch});
    for (st->v = 1; st->v < 3; st->v++) {
        TR_AWAIT(st, tr_chan_send(st->ch, cx, &st->op, &st->v, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
    }
    TR_AWAIT(st, tr_join_poll(&st->rj, cx, &st->ro));
    CHECK_ERR(st, st->ro.err, TR_OK);
    CHECK_EQ(st, tr_chan_len(st->ch), 0);
    TR_END(st);
}

static void
reuse_tx_drop(void *arg)
{
    reuse_tx *st = arg;
    tr_join_release(&st->rj);
}

static const tr_task_spec reuse_tx_spec = {
    .name = "reuse_tx", .poll = reuse_tx_poll, .drop = reuse_tx_drop, .size = sizeof(reuse_tx)};

static void
test_chan_send_op_reuse(void **state)
{
    (void)state;
    tr_chan *ch = NULL;
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 1, &ch), TR_OK);
    tu_run_main(1, &reuse_tx_spec, &(reuse_tx){.ch = ch});
    tr_chan_sender_release(ch);
    tr_chan_receiver_release(ch);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chan_new_rejects_bad_sizes),
        cmocka_unit_test(test_chan_try_send_try_recv_codes),
        cmocka_unit_test(test_chan_order_preserved),
        cmocka_unit_test(test_chan_send_waits_when_full),
        cmocka_unit_test(test_chan_waiting_senders_served_fifo),
        cmocka_unit_test(test_chan_last_sender_closes_after_drain),
        cmocka_unit_test(test_chan_receiver_close_fails_senders),
        cmocka_unit_test(test_chan_receiver_cancelled_while_waiting),
        cmocka_unit_test(test_chan_cancel_waiting_sender),
        cmocka_unit_test(test_chan_cancel_granted_sender_passes_room_on),
        cmocka_unit_test(test_chan_recv_charges_budget),
        cmocka_unit_test(test_chan_send_charges_budget),
        cmocka_unit_test(test_chan_cross_thread_try_send),
        cmocka_unit_test(test_chan_release_race),
        cmocka_unit_test(test_oneshot_send_recv),
        cmocka_unit_test(test_oneshot_sender_dropped_closes),
        cmocka_unit_test(test_oneshot_receiver_dropped_send_fails),
        cmocka_unit_test(test_oneshot_try_recv_codes),
        cmocka_unit_test(test_chan_try_would_block_is_eagain),
        cmocka_unit_test(test_chan_send_op_reuse),
        cmocka_unit_test(test_oneshot_recv_charges_budget),
        cmocka_unit_test(test_oneshot_cross_thread_send),
    };
    return tu_run(tests);
}

// Design notes.
//
// The executor is an actor. Its commands (Spawn, Cancel, Shutdown,
// StatusRequest: protobuf-c structs from proto/troupe/v1/executor.proto,
// never packed inside a process) are tr_msg messages on the runtime's inbox.
//
// The inbox is not a tr_mailbox. A mailbox has one consumer, and the
// executor has none of its own: every worker drains the inbox between
// polls (and worker 0, or tr_rt_free, during a shutdown), so that a command
// is carried out by whichever worker looks first, however busy the others
// are, with no task to schedule, and even with one worker whose only task
// never yields for long. So the inbox is a multi-producer stack of the same
// tr_msg headers that any thread pushes onto with one CAS and that any
// worker takes whole with one exchange (no ABA: nothing is ever popped
// singly), then reverses into arrival order. A consumer task on a mailbox
// would have serialised commands behind the run queue and needed the
// shutdown to wait for it; a take-all needs neither.
//
// Tasks woken from outside the runtime go to the global injector (a locked
// circular array of slot pointers with an atomic length). A task running
// on a worker takes the fast path into its worker's queues instead, with
// the same semantics.
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

// ---------------------------------------------------------------------------
// The inbox and the injector.

tr__cmd *
tr__cmd_new(Troupe__V1__ExecutorCommand__CommandCase kind, size_t extra, uint32_t flags)
{
    tr__cmd *c =
        (tr__cmd *)tr__msg_zalloc(sizeof(*c) + extra, &troupe__v1__executor_command__descriptor);
    c->c_hdr.m_flags = flags;
    troupe__v1__executor_command__init(&c->c_msg);
    c->c_msg.command_case = kind;
    switch (kind) {
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN:
        troupe__v1__spawn__init(&c->c_body.spawn);
        c->c_msg.spawn = &c->c_body.spawn;
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL:
        troupe__v1__cancel__init(&c->c_body.cancel);
        c->c_msg.cancel = &c->c_body.cancel;
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN:
        troupe__v1__shutdown__init(&c->c_body.shutdown);
        c->c_msg.shutdown = &c->c_body.shutdown;
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS:
        troupe__v1__status_request__init(&c->c_body.status);
        c->c_msg.status = &c->c_body.status;
        break;
    default:
        TR__ASSERT(!"tr__cmd_new: a command this version does not know");
    }
    return c;
}

void
tr__rt_send(tr_rt *rt, tr__cmd *cmd)
{
    // Once pushed, cmd belongs to whichever worker drains it.
    bool shutdown = cmd->c_msg.command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN;
    tr_msg *m = &cmd->c_hdr;
    tr_msg *head = atomic_load_explicit(&rt->r_inbox, memory_order_relaxed);
    do {
        atomic_store_explicit(&m->m_link.l_next, (tr_msg_link *)(void *)head, memory_order_relaxed);
        // seq_cst: the release half pairs with the acquire exchange in
        // tr__drain_inbox; the rest with tr__park_worker's last look.
    } while (!atomic_compare_exchange_weak_explicit(&rt->r_inbox, &head, m, memory_order_seq_cst,
                                                    memory_order_relaxed));
    tr__notify_parked(rt);
    // Worker 0 carries out shutdowns and deadlines: make sure it looks.
    if (shutdown) {
        tr__wake_main(rt);
    }
}

// Starts from outside the runtime and the shutdown meet as in Dekker's
// protocol: the starter announces itself in r_starting, then reads
// r_shutdown; the shutdown stores r_shutdown (tr_rt_shutdown's CAS), and
// its finisher reads r_starting before the last drain (tr__wait_starts). All
// four are seq_cst, so either the starter sees the shutdown and refuses,
// or the finisher sees the starter and waits until its Spawn message is in
// the inbox. A start is thus either refused or carried out (run or
// cancelled) before block_on returns from the shutdown.
bool
tr__rt_start_enter(tr_rt *rt)
{
    atomic_fetch_add_explicit(&rt->r_starting, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&rt->r_shutdown, memory_order_seq_cst) != TR__SD_NONE) {
        tr__rt_start_exit(rt);
        return false;
    }
    return true;
}

void
tr__rt_start_exit(tr_rt *rt)
{
    // Release: a finisher that reads 0 sees the Spawn message pushed.
    if (atomic_fetch_sub_explicit(&rt->r_starting, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&rt->r_shutdown, memory_order_seq_cst) != TR__SD_NONE) {
        // A finisher may wait: on the word (tr__wait_starts), or, graceful, in
        // worker 0's park until no start is in flight.
        tr__futex_wake(&rt->r_starting, INT32_MAX);
        tr__wake_main(rt);
    }
}

// tr__wait_starts waits until no start from outside is between its shutdown
// check and its push. Only once a shutdown was requested, when no new one
// can begin; so the wait is bounded by those few instructions.
void
tr__wait_starts(tr_rt *rt)
{
    uint32_t n;
    while ((n = atomic_load_explicit(&rt->r_starting, memory_order_seq_cst)) != 0) {
        tr__hook(TR__HOOK_WAIT_STARTS);
        tr__futex_wait(&rt->r_starting, n, UINT64_MAX);
    }
}

void
tr__inject_push(tr_rt *rt, tr__slot *const *tasks, uint32_t n)
{
    tr__mutex_lock(&rt->r_inj_lock);
    uint32_t len = atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed);
    if (len + n > rt->r_inj_cap) {
        // Grow to a power of two, unwrapping the old contents.
        uint32_t cap = rt->r_inj_cap ? rt->r_inj_cap : 256;
        while (cap < len + n) {
            cap *= 2;
        }
        tr__slot **buf = tr__alloc(sizeof(*buf) * cap);
        for (uint32_t i = 0; i < len; i++) {
            buf[i] = rt->r_inj_buf[(rt->r_inj_head + i) & (rt->r_inj_cap - 1)];
        }
        if (rt->r_inj_buf != NULL) {
            tr__free(rt->r_inj_buf, sizeof(*buf) * rt->r_inj_cap);
        }
        rt->r_inj_buf = buf;
        rt->r_inj_cap = cap;
        rt->r_inj_head = 0;
    }
    uint32_t mask = rt->r_inj_cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        rt->r_inj_buf[(rt->r_inj_head + len + i) & mask] = tasks[i];
    }
    // seq_cst pairs with tr__park_worker's last look.
    atomic_store_explicit(&rt->r_inj_len, len + n, memory_order_seq_cst);
    tr__mutex_unlock(&rt->r_inj_lock);
    tr__notify_parked(rt);
}

// tr__inject_pop takes up to max tasks from the injector: it returns the first
// and gives the others to w's scheduler.
tr__slot *
tr__inject_pop(tr__worker *w, uint32_t max)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed) == 0) {
        return NULL;
    }
    tr__slot *got[TR__RING_CAP / 2];
    if (max > TR__RING_CAP / 2) {
        max = TR__RING_CAP / 2;
    }
    tr__mutex_lock(&rt->r_inj_lock);
    uint32_t len = atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed);
    uint32_t n = len < max ? len : max;
    uint32_t mask = rt->r_inj_cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        got[i] = rt->r_inj_buf[(rt->r_inj_head + i) & mask];
    }
    rt->r_inj_head = (rt->r_inj_head + n) & mask;
    atomic_store_explicit(&rt->r_inj_len, len - n, memory_order_relaxed);
    tr__mutex_unlock(&rt->r_inj_lock);
    if (n == 0) {
        return NULL;
    }
    tr__counter_add(&w->w_inject_pops, n);
    for (uint32_t i = 1; i < n; i++) {
        rt->r_sched->push(w, got[i], TR__PUSH_YIELD);
    }
    return got[0];
}

// tr__drain_inbox carries out every queued command in arrival order.
bool
tr__drain_inbox(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inbox, memory_order_relaxed) == NULL) {
        return false;
    }
    tr_msg *m = atomic_exchange_explicit(&rt->r_inbox, NULL, memory_order_acquire);
    tr_msg *fifo = NULL;
    while (m != NULL) { // reverse the stack into arrival order
        tr_msg *next =
            (tr_msg *)(void *)atomic_load_explicit(&m->m_link.l_next, memory_order_relaxed);
        atomic_store_explicit(&m->m_link.l_next, (tr_msg_link *)(void *)fifo, memory_order_relaxed);
        fifo = m;
        m = next;
    }
    bool any = fifo != NULL;
    while (fifo != NULL) {
        tr_msg *next =
            (tr_msg *)(void *)atomic_load_explicit(&fifo->m_link.l_next, memory_order_relaxed);
        tr__cmd_handle(w, TR__CONTAINER_OF(fifo, tr__cmd, c_hdr));
        tr_msg_free(fifo);
        fifo = next;
    }
    return any;
}

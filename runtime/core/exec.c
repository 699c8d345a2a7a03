// Design notes.
//
// The executor is an actor. Spawn, Cancel and Shutdown arrive as messages
// (protobuf-c structs from proto/troupe/v1/executor.proto, never packed
// inside a process) on the runtime's inbox: a multi-producer stack that any
// thread pushes onto with one CAS and that the executor takes whole with
// one exchange, then reverses into arrival order. Tasks woken from outside
// the runtime travel the same way on a second stack, the injector. A task
// running on a worker takes the fast path to its worker's run queue instead,
// with the same semantics.
//
// The worker loop polls runnable tasks, checks the inbox every 32 polls (and
// whenever its queue is empty) so that outside work is not starved by a busy
// queue, and parks when there is nothing to do. Parking is a futex with
// three states (empty, parked, notified): a producer pushes, then swaps in
// NOTIFIED and wakes the futex only if the worker was PARKED, so a push that
// races the worker going to sleep is never lost and an idle runtime sleeps
// without timed polling.
//
// Shutdown: tr_rt_shutdown flips r_shutdown so tr_task_new refuses new tasks
// at once, and sends a Shutdown message. Graceful: the executor keeps
// running until no started task is left, or until the deadline, when it
// cancels the rest. Cancelling sweeps the pool: every started task that is
// not complete has its drop function run and completes as cancelled, so its
// joiners wake and nothing is leaked. Tasks still in a queue are completed
// in place and freed when popped.
#include <stdlib.h>
#include <string.h>

#include "exec.h"

void tr__rt_cancel_cmd(tr__worker *w, uint64_t key) TR__HIDDEN;

// ---------------------------------------------------------------------------
// The FIFO run queue (one worker; the schedulers issue adds the others).

static void
fifo_push(tr__worker *w, tr__slot *s)
{
    s->s_next = NULL;
    if (w->w_tail != NULL) {
        w->w_tail->s_next = s;
    } else {
        w->w_head = s;
    }
    w->w_tail = s;
}

static tr__slot *
fifo_pop(tr__worker *w)
{
    tr__slot *s = w->w_head;
    if (s != NULL) {
        w->w_head = s->s_next;
        if (w->w_head == NULL) {
            w->w_tail = NULL;
        }
    }
    return s;
}

static bool
fifo_empty(const tr__worker *w)
{
    return w->w_head == NULL;
}

const tr__sched_ops tr__sched_fifo = {
    .name = "fifo",
    .push = fifo_push,
    .pop = fifo_pop,
    .empty = fifo_empty,
};

// ---------------------------------------------------------------------------
// Parking.

static void
unpark(tr_rt *rt)
{
    // seq_cst pairs with the seq_cst CAS in park(): either the worker sees
    // the pushed work when it re-checks, or we see it PARKED and wake it.
    if (atomic_load_explicit(&rt->r_park, memory_order_seq_cst) == PARK_NOTIFIED) {
        return;
    }
    if (atomic_exchange_explicit(&rt->r_park, PARK_NOTIFIED, memory_order_seq_cst) == PARK_PARKED) {
        tr__futex_wake(&rt->r_park, 1);
    }
}

static void
park(tr__worker *w, uint64_t timeout_ns)
{
    tr_rt *rt = w->w_rt;
    uint32_t expect = PARK_EMPTY;
    if (!atomic_compare_exchange_strong_explicit(&rt->r_park, &expect, PARK_PARKED,
                                                 memory_order_seq_cst, memory_order_seq_cst)) {
        // NOTIFIED: something was pushed since we last looked.
        atomic_store_explicit(&rt->r_park, PARK_EMPTY, memory_order_seq_cst);
        return;
    }
    // The producers push before they unpark, so anything pushed before our
    // CAS is seen by the caller's next look; anything after wakes us.
    if (atomic_load_explicit(&rt->r_inbox, memory_order_seq_cst) == NULL &&
        atomic_load_explicit(&rt->r_inject, memory_order_seq_cst) == NULL) {
        atomic_store_explicit(&w->w_parks,
                              atomic_load_explicit(&w->w_parks, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        tr__futex_wait(&rt->r_park, PARK_PARKED, timeout_ns);
    }
    atomic_store_explicit(&rt->r_park, PARK_EMPTY, memory_order_seq_cst);
}

// ---------------------------------------------------------------------------
// The inbox and the injector.

tr__cmd *
tr__cmd_new(Troupe__V1__ExecutorCommand__CommandCase kind)
{
    tr__cmd *c = tr_zalloc(sizeof(*c));
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
    default:
        break;
    }
    return c;
}

static void
cmd_free(tr__cmd *c)
{
    tr_free(c, sizeof(*c));
}

tr_err
tr__rt_send(tr_rt *rt, tr__cmd *cmd)
{
    tr__cmd *head = atomic_load_explicit(&rt->r_inbox, memory_order_relaxed);
    do {
        cmd->c_next = head;
        // Pairs with the acquire exchange in drain_inbox.
    } while (!atomic_compare_exchange_weak_explicit(&rt->r_inbox, &head, cmd, memory_order_release,
                                                    memory_order_relaxed));
    unpark(rt);
    return TR_OK;
}

void
tr__rt_inject(tr_rt *rt, tr__slot *s)
{
    tr__slot *head = atomic_load_explicit(&rt->r_inject, memory_order_relaxed);
    do {
        s->s_next = head;
        // Pairs with the acquire exchange in drain_inject.
    } while (!atomic_compare_exchange_weak_explicit(&rt->r_inject, &head, s, memory_order_release,
                                                    memory_order_relaxed));
    unpark(rt);
}

static void
handle_cmd(tr__worker *w, tr__cmd *c)
{
    tr_rt *rt = w->w_rt;
    const Troupe__V1__ExecutorCommand *m = &c->c_msg;
    switch (m->command_case) {
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN:
        if (m->spawn->task_case == TROUPE__V1__SPAWN__TASK_TASK_KEY) {
            tr__slot *s = tr__pool_lookup(tr__key_index(m->spawn->task_key));
            // tr_task_start set SCHED, which keeps the slot alive for us.
            TR_ASSERT(s != NULL);
            rt->r_sched->push(w, s);
        }
        // A spawn by task spec needs a registry of task kinds: the actors
        // layer resolves those before they reach a runtime.
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL:
        tr__rt_cancel_cmd(w, m->cancel->task_id);
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN:
        if (m->shutdown->mode == TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE) {
            atomic_store_explicit(&rt->r_shutdown, SD_CANCELLING, memory_order_release);
        } else if (m->shutdown->deadline_ms > 0) {
            rt->r_deadline_ns = tr__now_ns() + (uint64_t)m->shutdown->deadline_ms * 1000000u;
        }
        break;
    default:
        break;
    }
    atomic_store_explicit(&w->w_commands,
                          atomic_load_explicit(&w->w_commands, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

// drain_inbox handles every queued command in arrival order.
static bool
drain_inbox(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inbox, memory_order_relaxed) == NULL) {
        return false;
    }
    tr__cmd *c = atomic_exchange_explicit(&rt->r_inbox, NULL, memory_order_acquire);
    tr__cmd *fifo = NULL;
    while (c != NULL) { // reverse the stack into arrival order
        tr__cmd *next = c->c_next;
        c->c_next = fifo;
        fifo = c;
        c = next;
    }
    while (fifo != NULL) {
        tr__cmd *next = fifo->c_next;
        handle_cmd(w, fifo);
        cmd_free(fifo);
        fifo = next;
    }
    return true;
}

static bool
drain_inject(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inject, memory_order_relaxed) == NULL) {
        return false;
    }
    tr__slot *s = atomic_exchange_explicit(&rt->r_inject, NULL, memory_order_acquire);
    tr__slot *fifo = NULL;
    while (s != NULL) {
        tr__slot *next = s->s_next;
        s->s_next = fifo;
        fifo = s;
        s = next;
    }
    while (fifo != NULL) {
        tr__slot *next = fifo->s_next;
        rt->r_sched->push(w, fifo);
        fifo = next;
    }
    return true;
}

// ---------------------------------------------------------------------------
// Shutdown.

// active_tasks counts started tasks that have not completed.
static uint64_t
active_tasks(tr_rt *rt)
{
    uint64_t started = atomic_load_explicit(&rt->r_ext_spawned, memory_order_relaxed), done = 0;
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr__worker *w = &rt->r_workers[i];
        started += atomic_load_explicit(&w->w_spawned, memory_order_relaxed);
        done += atomic_load_explicit(&w->w_completed, memory_order_relaxed);
        done += atomic_load_explicit(&w->w_cancelled, memory_order_relaxed);
    }
    return started > done ? started - done : 0;
}

static void
sweep_one(tr__slot *s, void *arg)
{
    tr__worker *w = arg;
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire);
    for (;;) {
        if ((old & (TR__W_LIVE | TR__W_STARTED)) != (TR__W_LIVE | TR__W_STARTED) ||
            (old & (TR__W_COMPLETE | TR__W_RUNNING))) {
            return;
        }
        // Claim it as if polling it; SCHED stays so a queued slot is only
        // freed by whoever pops it.
        if (atomic_compare_exchange_weak_explicit(&s->s_word, &old, old | TR__W_RUNNING,
                                                  memory_order_acquire, memory_order_acquire)) {
            break;
        }
    }
    tr__task_cancel_now(w, s);
}

// cancel_all completes every started task as cancelled, running its drop
// function, and empties the queues. Only worker 0 runs this, with no other
// worker polling.
static void
cancel_all(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    for (;;) {
        drain_inbox(w);
        drain_inject(w);
        tr__pool_foreach(&rt->r_pool, sweep_one, w);
        tr__slot *s;
        while ((s = rt->r_sched->pop(w)) != NULL) {
            // Complete ones just leave the queue; one queued since the sweep
            // (started late by its preparer) is cancelled, never polled. A
            // queued slot is never free, so the flag lands on the right task.
            atomic_fetch_or_explicit(&s->s_word, TR__W_CANCEL, memory_order_relaxed);
            tr__task_run(w, s);
        }
        if (atomic_load_explicit(&rt->r_inbox, memory_order_acquire) == NULL &&
            atomic_load_explicit(&rt->r_inject, memory_order_acquire) == NULL &&
            active_tasks(rt) == 0) {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The worker loop.

static void
refresh_clock(tr__worker *w)
{
    w->w_now_ms = (uint32_t)((tr__now_ns() - w->w_rt->r_start_ns) / 1000000u);
}

static bool
root_done(tr__slot *root)
{
    return root != NULL &&
           (atomic_load_explicit(&root->s_word, memory_order_acquire) & TR__W_COMPLETE);
}

static void
run_loop(tr__worker *w, tr__slot *root)
{
    tr_rt *rt = w->w_rt;
    const tr__sched_ops *sched = rt->r_sched;
    refresh_clock(w);
    // Commands sent before block_on (a Shutdown among them) come first.
    drain_inbox(w);
    drain_inject(w);
    for (;;) {
        if ((++w->w_tick & 31) == 0 || sched->empty(w)) {
            drain_inbox(w);
            drain_inject(w);
            if ((w->w_tick & 31) == 0) {
                refresh_clock(w);
            }
        }
        int sd = atomic_load_explicit(&rt->r_shutdown, memory_order_acquire);
        if (TR_UNLIKELY(sd != SD_NONE)) {
            if (sd == SD_REQUESTED && rt->r_deadline_ns != 0 && tr__now_ns() >= rt->r_deadline_ns) {
                sd = SD_CANCELLING;
            }
            if (sd >= SD_CANCELLING) {
                cancel_all(w);
                atomic_store_explicit(&rt->r_shutdown, SD_DONE, memory_order_release);
                return;
            }
        }
        tr__slot *s = sched->pop(w);
        if (s != NULL) {
            tr__task_run(w, s);
            if (s == root && sd == SD_NONE && root_done(root)) {
                return;
            }
            continue;
        }
        if (sd == SD_NONE && root_done(root)) {
            return;
        }
        if (sd == SD_REQUESTED && active_tasks(rt) == 0 &&
            atomic_load_explicit(&rt->r_inbox, memory_order_acquire) == NULL) {
            atomic_store_explicit(&rt->r_shutdown, SD_DONE, memory_order_release);
            return;
        }
        uint64_t timeout = UINT64_MAX;
        if (sd == SD_REQUESTED && rt->r_deadline_ns != 0) {
            uint64_t now = tr__now_ns();
            timeout = rt->r_deadline_ns > now ? rt->r_deadline_ns - now : 0;
        }
        park(w, timeout);
        refresh_clock(w);
    }
}

// ---------------------------------------------------------------------------
// The public runtime API.

void
tr_rt_config_init(tr_rt_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 1;
    cfg->budget = 128;
    cfg->max_tasks = (uint64_t)1 << 24;
}

tr_err
tr_rt_new(const tr_rt_config *cfg, tr_rt **out)
{
    tr_rt_config c;
    if (cfg == NULL) {
        tr_rt_config_init(&c);
    } else {
        c = *cfg;
    }
    if (out == NULL || c.workers == 0 || c.budget == 0 || c.max_tasks == 0) {
        return TR_EINVAL;
    }
    if (c.workers > 1) {
        return TR_ENOTSUP; // the multi-threaded schedulers come next
    }
    tr_rt *rt = tr_zalloc(sizeof(*rt));
    rt->r_cfg = c;
    rt->r_sched = &tr__sched_fifo;
    rt->r_nworkers = c.workers;
    tr_err rv = tr__pool_init(&rt->r_pool, c.workers, c.max_tasks);
    if (rv != TR_OK) {
        goto fail;
    }
    rt->r_workers = tr_zalloc(sizeof(tr__worker) * c.workers);
    for (unsigned i = 0; i < c.workers; i++) {
        rt->r_workers[i].w_rt = rt;
        rt->r_workers[i].w_index = i;
    }
    rt->r_start_ns = tr__now_ns();
    *out = rt;
    return TR_OK;
fail:
    tr_free(rt, sizeof(*rt));
    return rv;
}

tr_err
tr_rt_block_on(tr_rt *rt, void *root, tr_outcome *out)
{
    if (rt == NULL) {
        return TR_EINVAL;
    }
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    if (root != NULL && tr__slot_rt(tr__state_slot(root)) != rt) {
        return TR_EINVAL;
    }
    if (atomic_exchange_explicit(&rt->r_in_block_on, 1, memory_order_acquire) != 0) {
        return TR_EBUSY;
    }
    tr__worker *w = &rt->r_workers[0];
    tr__cur = w;
    tr_join j = TR_JOIN_NONE;
    tr__slot *rs = NULL;
    if (root != NULL) {
        rs = tr__state_slot(root);
        tr_task_start(root, &j);
    }
    run_loop(w, rs);
    tr_outcome o = {.err = TR_ESHUTDOWN};
    if (rs != NULL) {
        uint64_t word = atomic_load_explicit(&rs->s_word, memory_order_acquire);
        TR_ASSERT(word & TR__W_COMPLETE);
        tr__take_outcome(rs, word, &o);
        tr__slot_release(rt, rs, TR__W_BOXED);
    }
    tr__cur = NULL;
    atomic_store_explicit(&rt->r_in_block_on, 0, memory_order_release);
    bool sd = atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != SD_NONE;
    if (out != NULL) {
        *out = o;
    } else {
        tr_outcome_fini(&o);
    }
    if (o.err == TR_OK) {
        return TR_OK;
    }
    return sd ? TR_ESHUTDOWN : o.err;
}

tr_err
tr_rt_shutdown(tr_rt *rt, tr_shutdown_mode mode, uint32_t deadline_ms)
{
    if (rt == NULL || (mode != TR_SHUTDOWN_GRACEFUL && mode != TR_SHUTDOWN_IMMEDIATE)) {
        return TR_EINVAL;
    }
    int expect = SD_NONE;
    if (!atomic_compare_exchange_strong_explicit(&rt->r_shutdown, &expect, SD_REQUESTED,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        return TR_ESHUTDOWN;
    }
    tr__cmd *cmd = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN);
    cmd->c_body.shutdown.mode = mode == TR_SHUTDOWN_IMMEDIATE
                                    ? TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE
                                    : TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_GRACEFUL;
    cmd->c_body.shutdown.deadline_ms = deadline_ms;
    return tr__rt_send(rt, cmd);
}

bool
tr_rt_is_shutdown(tr_rt *rt)
{
    return atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != SD_NONE;
}

static void
destroy_result(tr__slot *s, void *arg)
{
    (void)arg;
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if ((word & (TR__W_LIVE | TR__W_COMPLETE | TR__W_BOXED)) ==
            (TR__W_LIVE | TR__W_COMPLETE | TR__W_BOXED) &&
        s->s_result.box.dtor != NULL) {
        s->s_result.box.dtor(s->s_result.box.ptr);
    }
}

void
tr_rt_free(tr_rt *rt)
{
    if (rt == NULL) {
        return;
    }
    TR_ASSERT(atomic_load_explicit(&rt->r_in_block_on, memory_order_acquire) == 0);
    // Act as worker 0 while cancelling, so frees go to its shard.
    tr__worker *saved = tr__cur;
    tr__cur = &rt->r_workers[0];
    atomic_store_explicit(&rt->r_shutdown, SD_CANCELLING, memory_order_release);
    cancel_all(&rt->r_workers[0]);
    // Results still waiting for a join handle that will never be used.
    tr__pool_foreach(&rt->r_pool, destroy_result, NULL);
    tr__cur = saved;
    tr__pool_fini(&rt->r_pool);
    tr_free(rt->r_workers, sizeof(tr__worker) * rt->r_nworkers);
    tr_free(rt, sizeof(*rt));
}

void
tr_rt_get_stats(tr_rt *rt, tr_rt_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->spawned = atomic_load_explicit(&rt->r_ext_spawned, memory_order_relaxed);
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr__worker *w = &rt->r_workers[i];
        out->spawned += atomic_load_explicit(&w->w_spawned, memory_order_relaxed);
        out->completed += atomic_load_explicit(&w->w_completed, memory_order_relaxed);
        out->cancelled += atomic_load_explicit(&w->w_cancelled, memory_order_relaxed);
        out->polls += atomic_load_explicit(&w->w_polls, memory_order_relaxed);
        out->commands += atomic_load_explicit(&w->w_commands, memory_order_relaxed);
    }
    out->live_tasks = tr__pool_live(&rt->r_pool);
    tr__pool_usage(&rt->r_pool, &out->pool_slots, &out->pool_bytes);
    out->workers = rt->r_nworkers;
}

// ---------------------------------------------------------------------------
// Dump.

const char *
tr_task_state_name(tr_task_state s)
{
    static const char *const names[] = {"prepared", "idle",       "scheduled",
                                        "running",  "cancelling", "complete"};
    if ((unsigned)s >= sizeof(names) / sizeof(names[0])) {
        return "?";
    }
    return names[s];
}

typedef struct foreach_arg {
    void (*fn)(const tr_task_info *info, void *arg);
    void *arg;
    uint64_t now_ms;
} foreach_arg;

static void
foreach_one(tr__slot *s, void *arg)
{
    foreach_arg *fa = arg;
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if (!(word & TR__W_LIVE)) {
        return;
    }
    const tr_task_spec *spec = atomic_load_explicit(&s->s_spec, memory_order_relaxed);
    tr_task_info info;
    info.id.id = tr__slot_key(s, word);
    info.name = (spec != NULL && spec->name != NULL) ? spec->name : "?";
    if (!(word & TR__W_STARTED)) {
        info.state = TR_TASK_PREPARED;
    } else if (word & TR__W_COMPLETE) {
        info.state = TR_TASK_COMPLETE;
    } else if (word & TR__W_CANCEL) {
        info.state = TR_TASK_CANCELLING;
    } else if (word & TR__W_RUNNING) {
        info.state = TR_TASK_RUNNING;
    } else if (word & TR__W_SCHED) {
        info.state = TR_TASK_SCHEDULED;
    } else {
        info.state = TR_TASK_IDLE;
    }
    info.polls = atomic_load_explicit(&s->s_polls, memory_order_relaxed);
    info.sleeps = (uint32_t)((word & TR__W_SLEEP_MASK) >> TR__W_SLEEP_SHIFT);
    uint32_t last = atomic_load_explicit(&s->s_last_poll_ms, memory_order_relaxed);
    info.idle_ms = (info.polls == 0 || fa->now_ms < last) ? 0 : fa->now_ms - last;
    fa->fn(&info, fa->arg);
}

void
tr_rt_foreach_task(tr_rt *rt, void (*fn)(const tr_task_info *info, void *arg), void *arg)
{
    foreach_arg fa = {fn, arg, (tr__now_ns() - rt->r_start_ns) / 1000000u};
    tr__pool_foreach(&rt->r_pool, foreach_one, &fa);
}

static void
dump_one(const tr_task_info *info, void *arg)
{
    fprintf((FILE *)arg, "  %016llx  %-24s %-10s polls=%-8u sleeps=%-6u idle=%llums\n",
            (unsigned long long)info->id.id, info->name, tr_task_state_name(info->state),
            info->polls, info->sleeps, (unsigned long long)info->idle_ms);
}

void
tr_rt_dump(tr_rt *rt, FILE *f)
{
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    fprintf(f, "troupe runtime %p: %u worker(s), %llu live task(s)\n", (void *)rt, st.workers,
            (unsigned long long)st.live_tasks);
    tr_rt_foreach_task(rt, dump_one, f);
    fprintf(f,
            "  spawned=%llu completed=%llu cancelled=%llu polls=%llu commands=%llu "
            "pool_slots=%llu pool_bytes=%llu\n",
            (unsigned long long)st.spawned, (unsigned long long)st.completed,
            (unsigned long long)st.cancelled, (unsigned long long)st.polls,
            (unsigned long long)st.commands, (unsigned long long)st.pool_slots,
            (unsigned long long)st.pool_bytes);
}

// rt.c: the runtime's public lifecycle: configuration and the TROUPE_*
// environment, tr_rt_new, block_on, shutdown, free, statistics.
#define _GNU_SOURCE // pthread_setname_np
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

// ---------------------------------------------------------------------------
// The public runtime API.

void
tr_rt_config_init(tr_rt_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 0;
    cfg->sched = TR_SCHED_WS;
    cfg->budget = 128;
    cfg->max_tasks = (uint64_t)1 << 24;
}

#define MAX_WORKERS 255 // the task word keeps the last worker in 8 bits

static bool
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end != '\0' || errno != 0) {
        return false;
    }
    *out = v;
    return true;
}

// apply_env applies the TROUPE_* overrides; an error names the variable,
// its value and what is allowed (tr_error_detail).
static tr_err
apply_env(tr_rt_config *c)
{
    const char *e = getenv("TROUPE_SCHED");
    if (e != NULL) {
        tr_sched_kind k;
        if (tr_sched_parse(e, &k) != TR_OK) {
            char names[64];
            tr__sched_names(names, sizeof(names));
            return tr__fail(TR_EINVAL, "TROUPE_SCHED=%.64s: not a scheduler (%s)", e, names);
        }
        c->sched = k;
    }
    if ((e = getenv("TROUPE_BACKEND")) != NULL) {
        if (tr__backend_find(e) == NULL) {
            char names[64];
            tr__backend_names(names, sizeof(names));
            return tr__fail(TR_EINVAL, "TROUPE_BACKEND=%.64s: not a reactor backend (%s)", e,
                            names);
        }
        c->backend = tr__backend_find(e)->name; // static storage, unlike getenv's
    }
    uint64_t v;
    if ((e = getenv("TROUPE_WORKERS")) != NULL) {
        if (!parse_u64(e, &v) || v > MAX_WORKERS) {
            return tr__fail(TR_EINVAL,
                            "TROUPE_WORKERS=%.64s: not a number of workers (0 for one per core, "
                            "or 1 to %d)",
                            e, MAX_WORKERS);
        }
        c->workers = (unsigned)v;
    }
    if ((e = getenv("TROUPE_DETERMINISTIC")) != NULL) {
        if (!parse_u64(e, &v) || v == 0) {
            return tr__fail(TR_EINVAL, "TROUPE_DETERMINISTIC=%.64s: a seed is a number above 0", e);
        }
        c->deterministic_seed = v;
    }
    return TR_OK;
}

// A scheduler's per-worker state: zeroed, on cache lines of its own.
static size_t
sched_state_size(const tr__sched_ops *ops)
{
    size_t n = ops->state_size > 0 ? ops->state_size : 1;
    return (n + 63) & ~(size_t)63;
}

static void *
sched_state_new(const tr__sched_ops *ops)
{
    size_t n = sched_state_size(ops);
    void *p = aligned_alloc(64, n);
    if (p == NULL) {
        tr__panic("out of memory allocating scheduler state (%zu bytes)", n);
    }
    memset(p, 0, n);
    return p;
}

static void
sched_state_free(const tr__sched_ops *ops, void *p)
{
    (void)ops;
    free(p);
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
    if (out == NULL) {
        return tr__fail(TR_EINVAL, "tr_rt_new: out is NULL");
    }
    tr_err rv;
    if (!c.ignore_env && (rv = apply_env(&c)) != TR_OK) {
        return rv;
    }
    if (c.workers > MAX_WORKERS) {
        return tr__fail(TR_EINVAL, "tr_rt_config.workers=%u: at most %d (0 for one per core)",
                        c.workers, MAX_WORKERS);
    }
    if (c.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.workers = n < 1 ? 1 : (n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n);
    }
    if (c.deterministic_seed != 0) {
        c.workers = 1;
    }
    if (c.budget == 0) {
        return tr__fail(TR_EINVAL, "tr_rt_config.budget=0: a poll needs at least 1 (default 128)");
    }
    if (c.max_tasks == 0) {
        return tr__fail(TR_EINVAL, "tr_rt_config.max_tasks=0: at least 1 (default 16 Mi)");
    }
    const tr__backend_ops *be = tr__backend_find(c.backend);
    if (be == NULL) {
        char names[64];
        tr__backend_names(names, sizeof(names));
        return tr__fail(TR_EINVAL, "tr_rt_config.backend=\"%.64s\": not a reactor backend (%s)",
                        c.backend, names);
    }
    const tr__sched_entry *se = tr__sched_find(c.sched);
    if (se == NULL) {
        char names[64];
        tr__sched_names(names, sizeof(names));
        return tr__fail(TR_EINVAL, "tr_rt_config.sched=%d: not a scheduler (%s)", (int)c.sched,
                        names);
    }
    tr_rt *rt = tr__zalloc(sizeof(*rt));
    rt->r_cfg = c;
    rt->r_sched = c.deterministic_seed != 0 ? &tr__sched_det : se->ops;
    rt->r_nworkers = c.workers;
    rv = tr__pool_init(&rt->r_pool, c.workers, c.max_tasks);
    if (rv != TR_OK) {
        tr__free(rt, sizeof(*rt));
        return rv;
    }
    rt->r_inj_lock = (tr__mutex)TR__MUTEX_INIT;
    rt->r_idle_lock = (tr__mutex)TR__MUTEX_INIT;
    rt->r_sleepers = tr__zalloc(sizeof(unsigned) * c.workers);
    rt->r_workers = aligned_alloc(64, sizeof(tr__worker) * c.workers);
    if (rt->r_workers == NULL) {
        tr__panic("out of memory allocating workers");
    }
    memset(rt->r_workers, 0, sizeof(tr__worker) * c.workers);
    for (unsigned i = 0; i < c.workers; i++) {
        tr__worker *w = &rt->r_workers[i];
        w->w_rt = rt;
        w->w_index = i;
        w->w_sched = sched_state_new(rt->r_sched);
        rt->r_sched->init(w);
    }
    rv = tr__reactor_new(rt, c.clock, be, &rt->r_reactor);
    if (rv != TR_OK) {
        for (unsigned i = 0; i < c.workers; i++) {
            rt->r_sched->fini(&rt->r_workers[i]);
            sched_state_free(rt->r_sched, rt->r_workers[i].w_sched);
        }
        free(rt->r_workers);
        tr__free(rt->r_sleepers, sizeof(unsigned) * c.workers);
        tr__pool_fini(&rt->r_pool);
        tr__free(rt, sizeof(*rt));
        return rv;
    }
    rt->r_start_ns = tr__now_ns();
    static pthread_once_t res_once = PTHREAD_ONCE_INIT;
    pthread_once(&res_once, tr__coarse_res_init);
    // Workers 1..N-1 run from now on; worker 0 joins inside block_on.
    atomic_store_explicit(&rt->r_idle, (c.workers - 1) * TR__IDLE_UNPARKED_ONE,
                          memory_order_relaxed);
    for (unsigned i = 1; i < c.workers; i++) {
        tr__worker *w = &rt->r_workers[i];
        if (pthread_create(&w->w_thread, NULL, tr__worker_main, w) != 0) {
            tr__panic("cannot start worker thread %u", i);
        }
        char name[16];
        snprintf(name, sizeof(name), "troupe-w%u", i % 1000u);
        pthread_setname_np(w->w_thread, name);
    }
    *out = rt;
    return TR_OK;
}

static const tr_waker_ops main_waker_ops;

static void
main_wake(const tr_waker *wk)
{
    tr__wake_main(((tr__worker *)wk->data)->w_rt);
}

static const tr_waker_ops main_waker_ops = {main_wake};

// hand_off gives worker 0's queued tasks to the others when block_on
// returns, so that nothing waits for the next block_on needlessly.
static void
hand_off(tr__worker *w)
{
    tr__slot *s;
    while ((s = w->w_rt->r_sched->pop(w)) != NULL) {
        tr__inject_push(w->w_rt, &s, 1);
    }
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
    atomic_fetch_add_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE, memory_order_seq_cst);
    tr_join j = TR_JOIN_NONE;
    tr__slot *rs = NULL;
    tr_outcome o = {.err = TR_ESHUTDOWN};
    if (root != NULL) {
        if (tr_task_start(root, &j) == TR_OK) {
            rs = tr__state_slot(root);
            // Wherever root completes, worker 0 must wake to return.
            tr__join_register(rs, (tr_waker){&main_waker_ops, w});
        } else {
            // Refused (a shutdown was requested): its drop has run. Carry
            // the shutdown out below all the same.
            o.err = TR_ECANCELED;
        }
    }
    tr__run_loop(w, rs, true);
    if (w->w_searching) {
        tr__end_searching(w);
    }
    hand_off(w);
    atomic_fetch_sub_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE, memory_order_seq_cst);
    // If we drove the reactor last, every other worker may be asleep on its
    // futex: wake one, so that it parks again as the driver and IO and
    // timers keep going while no thread is inside block_on.
    tr__wake_one_sleeper(rt);
    if (rs != NULL) {
        uint64_t word = tr__slot_word(rs);
        TR__ASSERT(word & TR__W_COMPLETE);
        tr__take_outcome(rs, word, &o);
        tr__slot_release(rt, rs, TR__W_BOXED);
    }
    tr__cur = NULL;
    atomic_store_explicit(&rt->r_in_block_on, 0, memory_order_release);
    bool sd = atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_NONE;
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
tr_rt_run(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg), void *arg,
          tr_outcome *out)
{
    void *root;
    tr_err rv = tr__task_prepare(rt, spec, init, arg, &root);
    if (rv != TR_OK) {
        if (out != NULL) {
            *out = (tr_outcome){.err = rv};
        }
        return rv;
    }
    return tr_rt_block_on(rt, root, out);
}

// Keys of per-runtime slots: process-wide, never freed. key_fini[i] is the
// release function of key id i + 1, written before nkeys publishes it.
static void (*key_fini[TR_RT_LOCAL_MAX])(tr_rt *rt, void *value);
static _Atomic uint32_t nkeys;
static tr__mutex key_lock = TR__MUTEX_INIT;

tr_err
tr_rt_key_create(tr_rt_key *key, void (*fini)(tr_rt *rt, void *value))
{
    if (key == NULL) {
        return tr__fail(TR_EINVAL, "tr_rt_key_create: key is NULL");
    }
    tr__mutex_lock(&key_lock);
    uint32_t n = atomic_load_explicit(&nkeys, memory_order_relaxed);
    if (n == TR_RT_LOCAL_MAX) {
        tr__mutex_unlock(&key_lock);
        return tr__fail(TR_EFULL, "tr_rt_key_create: all %d keys are taken", TR_RT_LOCAL_MAX);
    }
    key_fini[n] = fini;
    // Release: a reader that sees the count sees the function.
    atomic_store_explicit(&nkeys, n + 1, memory_order_release);
    tr__mutex_unlock(&key_lock);
    key->id = n + 1;
    return TR_OK;
}

static bool
key_valid(tr_rt_key key)
{
    return key.id != 0 && key.id <= atomic_load_explicit(&nkeys, memory_order_acquire);
}

void *
tr_rt_local_get(tr_rt *rt, tr_rt_key key)
{
    if (rt == NULL || !key_valid(key)) {
        return NULL;
    }
    // Acquire pairs with the release store in tr_rt_local_set: the value's
    // contents are visible.
    return atomic_load_explicit(&rt->r_local[key.id - 1], memory_order_acquire);
}

void *
tr_rt_local_set(tr_rt *rt, tr_rt_key key, void *value)
{
    if (rt == NULL || !key_valid(key) || value == NULL) {
        return NULL;
    }
    tr__mutex_lock(&rt->r_idle_lock);
    void *cur = atomic_load_explicit(&rt->r_local[key.id - 1], memory_order_relaxed);
    if (cur == NULL) {
        rt->r_local_order[rt->r_nlocal++] = (uint8_t)(key.id - 1);
        atomic_store_explicit(&rt->r_local[key.id - 1], value, memory_order_release);
        cur = value;
    }
    tr__mutex_unlock(&rt->r_idle_lock);
    return cur;
}

bool
tr__rt_shutdown_begin(tr_rt *rt)
{
    int expect = TR__SD_NONE;
    return atomic_compare_exchange_strong_explicit(&rt->r_shutdown, &expect, TR__SD_REQUESTED,
                                                   memory_order_acq_rel, memory_order_acquire);
}

tr_err
tr_rt_shutdown(tr_rt *rt, tr_shutdown_mode mode, uint32_t deadline_ms)
{
    if (rt == NULL || (mode != TR_SHUTDOWN_GRACEFUL && mode != TR_SHUTDOWN_IMMEDIATE)) {
        return TR_EINVAL;
    }
    if (!tr__rt_shutdown_begin(rt)) {
        return TR_ESHUTDOWN;
    }
    tr__cmd *cmd = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN, 0, TR__CMD_LOCAL);
    cmd->c_body.shutdown.mode = mode == TR_SHUTDOWN_IMMEDIATE
                                    ? TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE
                                    : TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_GRACEFUL;
    cmd->c_body.shutdown.deadline_ms = deadline_ms;
    tr__rt_send(rt, cmd);
    return TR_OK;
}

bool
tr_rt_is_shutdown(tr_rt *rt)
{
    return atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_NONE;
}

static void
destroy_result(tr__slot *s, void *arg)
{
    (void)arg;
    tr__slot_destroy_result(s);
}

void
tr_rt_free(tr_rt *rt)
{
    if (rt == NULL) {
        return;
    }
    TR__ASSERT(atomic_load_explicit(&rt->r_in_block_on, memory_order_acquire) == 0);
    // Act as worker 0 while cancelling, so frees go to its shard.
    tr__worker *saved = tr__cur;
    tr__cur = &rt->r_workers[0];
    if (atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_DONE) {
        atomic_store_explicit(&rt->r_shutdown, TR__SD_CANCELLING, memory_order_release);
        tr__stop_others(rt);
        tr__cancel_all(&rt->r_workers[0]);
        atomic_store_explicit(&rt->r_shutdown, TR__SD_DONE, memory_order_release);
    } else {
        tr__stop_others(rt);
        tr__cancel_all(&rt->r_workers[0]); // commands that came after the end
    }
    // Results still waiting for a join handle that will never be used.
    tr__pool_foreach(&rt->r_pool, destroy_result, NULL);
    tr__cur = saved;
    atomic_store_explicit(&rt->r_exit, 1, memory_order_release);
    tr__futex_wake(&rt->r_exit, INT32_MAX);
    for (unsigned i = 1; i < rt->r_nworkers; i++) {
        pthread_join(rt->r_workers[i].w_thread, NULL);
    }
    // Modules, last installed first (no task is left to use them).
    for (unsigned i = rt->r_nlocal; i-- > 0;) {
        unsigned k = rt->r_local_order[i];
        void *v = atomic_load_explicit(&rt->r_local[k], memory_order_acquire);
        if (key_fini[k] != NULL) {
            key_fini[k](rt, v);
        }
    }
    tr__reactor_free(rt->r_reactor);
    tr__kinds_free(rt);
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        rt->r_sched->fini(&rt->r_workers[i]);
        sched_state_free(rt->r_sched, rt->r_workers[i].w_sched);
    }
    if (rt->r_inj_buf != NULL) {
        tr__free(rt->r_inj_buf, sizeof(*rt->r_inj_buf) * rt->r_inj_cap);
    }
    tr__pool_fini(&rt->r_pool);
    free(rt->r_workers);
    tr__free(rt->r_sleepers, sizeof(unsigned) * rt->r_nworkers);
    tr__free(rt, sizeof(*rt));
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
        out->steals += atomic_load_explicit(&w->w_steals, memory_order_relaxed);
        out->parks += atomic_load_explicit(&w->w_parks, memory_order_relaxed);
    }
    out->live_tasks = tr__pool_live(&rt->r_pool);
    tr__pool_usage(&rt->r_pool, &out->pool_slots, &out->pool_bytes);
    out->workers = rt->r_nworkers;
    out->sched = rt->r_cfg.sched;
    out->deterministic_seed = rt->r_cfg.deterministic_seed;
}

tr_err
tr_rt_worker_stats(tr_rt *rt, unsigned i, tr_worker_stats *out)
{
    if (rt == NULL || out == NULL || i >= rt->r_nworkers) {
        return TR_EINVAL;
    }
    tr__worker *w = &rt->r_workers[i];
    out->polls = atomic_load_explicit(&w->w_polls, memory_order_relaxed);
    out->steals = atomic_load_explicit(&w->w_steals, memory_order_relaxed);
    out->stolen = atomic_load_explicit(&w->w_stolen, memory_order_relaxed);
    out->parks = atomic_load_explicit(&w->w_parks, memory_order_relaxed);
    out->injector_pops = atomic_load_explicit(&w->w_inject_pops, memory_order_relaxed);
    out->lifo_hits = atomic_load_explicit(&w->w_lifo_hits, memory_order_relaxed);
    out->queue_len = rt->r_sched->len(w);
    return TR_OK;
}

// Design notes.
//
// A group is a lock (g_lock), three intrusive lists of member records and a
// waker. Each member record holds the key of a member's join handle; the
// group registers itself as that task's joiner with tr__join_register
// (task.c's join protocol: the completer takes the registered waker in the
// same CAS that marks the task complete and calls it exactly once, after the
// slot's word says COMPLETE). The waker is {&member_waker_ops, record}, so
// the group hears of each completion when it happens, on the completing
// worker: the record moves from the running lists to the done list in
// completion order, at O(1) cost, instead of the joiner polling N handles.
// If the task completed before the registration, tr__join_register says
// so and the starter runs the completion itself.
//
// Completion (member_done) takes the outcome out of the slot at once and
// drops the join handle's reference, as a join would: the slot is freed as
// soon as the member finishes, and no handle outlives its task. So a group
// never holds a key that tr_rt_free could invalidate, and tr_group_free may
// come after tr_rt_free. The outcome waits in the record for join_next, or
// is destroyed by join_all.
//
// Lists, all under g_lock: g_running (started, no cancel sent yet),
// g_cancelling (cancel sent, not finished), g_done (finished, outcome not
// collected). Cancelling moves records from g_running to g_cancelling in
// batches of CANCEL_BATCH under the lock and calls tr_task_cancel on the
// copied keys after the unlock (never call out under a lock). A key whose
// task has finished and been collected meanwhile is stale, which
// tr_task_cancel recognises; each record is cancelled at most once. A member
// started into a cancelled group (g_cancelled) must never run, even for one
// poll on another worker, so tr_group_start sets the CANCEL flag in the
// prepared slot's word before tr_task_start (which keeps it): the first
// worker to pick the task up runs its drop instead of its poll, as for any
// cancel. (This uses task.c's word layout; a cancel racing the start is
// sent with tr_task_cancel once the task is started.)
//
// Failure. member_done classifies the outcome (see group.h) and records the
// first failure; with TR_GROUP_CANCEL_ON_ERROR the first failure also
// cancels the rest, from the completing worker, after the unlock.
//
// Waiting. One waker (g_waiter, with g_want: ALL or NEXT). member_done
// takes it, under the lock, when what it waits for has happened (nothing
// left running, or anything done) and fires it after the unlock. The
// blocking tr_group_wait uses a thread parker on its stack as the waker;
// it never returns while its waker is registered, so the parker outlives
// every copy that might be fired (whoever takes the waker fires it, and the
// thread waits for that).
//
// Memory. g_refs counts the owner (until tr_group_free) plus one per
// member record until its member_done has finished with the group (which
// includes a cancel-on-error sweep). Whoever drops the last reference frees
// the group. After tr_group_free, member_done destroys outcomes itself.
// Records are tr__alloc'd per member (64 bytes): groups are not on the
// spawn hot path.
#include <string.h>

#include <troupe/group.h>

#include "exec/exec.h"
#include "sync/sync.h"

#define CANCEL_BATCH 32

enum { WANT_ALL = 0, WANT_NEXT = 1 };

static const tr_waker no_waker = {NULL, NULL};

typedef struct mlink {
    struct mlink *l_next;
    struct mlink *l_prev;
} mlink;

typedef struct member {
    mlink m_link;      // in one of the group's lists; under g_lock
    tr_group *m_group; // immutable
    uint64_t m_key;    // the member's join key; immutable once published
    tr_outcome m_out;  // written by member_done before it links the record
                       // into g_done; read by whoever unlinks it from there
} member;

struct tr_group {
    tr__mutex g_lock;
    tr_rt *g_rt;      // immutable
    unsigned g_flags; // immutable

    // All below: protected by g_lock.
    mlink g_running;
    mlink g_cancelling;
    mlink g_done;
    size_t g_nrunning; // records in g_running and g_cancelling
    size_t g_ndone;    // records in g_done
    size_t g_refs;     // see the notes
    bool g_owner_gone; // tr_group_free ran
    bool g_cancelled;  // cancel everything started until the group empties
    bool g_failed;     // g_first_err is set
    tr_err g_first_err;
    tr_waker g_waiter; // the task (or thread parker) awaiting the group
    int g_want;        // WANT_ALL or WANT_NEXT
};

// ---------------------------------------------------------------------------
// Lists (under g_lock).

static void
list_init(mlink *h)
{
    h->l_next = h;
    h->l_prev = h;
}

static bool
list_empty(const mlink *h)
{
    return h->l_next == h;
}

static void
list_push(mlink *h, mlink *l)
{
    l->l_next = h;
    l->l_prev = h->l_prev;
    h->l_prev->l_next = l;
    h->l_prev = l;
}

static void
list_unlink(mlink *l)
{
    l->l_prev->l_next = l->l_next;
    l->l_next->l_prev = l->l_prev;
    l->l_next = NULL;
    l->l_prev = NULL;
}

static member *
list_pop(mlink *h)
{
    if (list_empty(h)) {
        return NULL;
    }
    mlink *l = h->l_next;
    list_unlink(l);
    return TR__CONTAINER_OF(l, member, m_link);
}

// list_take moves every record of src to the empty list dst.
static void
list_take(mlink *dst, mlink *src)
{
    list_init(dst);
    if (list_empty(src)) {
        return;
    }
    dst->l_next = src->l_next;
    dst->l_prev = src->l_prev;
    dst->l_next->l_prev = dst;
    dst->l_prev->l_next = dst;
    list_init(src);
}

// discard destroys the outcomes in a list taken out of the group (outside
// the lock: destructors are user code) and frees the records.
static void
discard(mlink *h)
{
    member *m;
    while ((m = list_pop(h)) != NULL) {
        tr_outcome_fini(&m->m_out);
        tr__free(m, sizeof *m);
    }
}

// ---------------------------------------------------------------------------
// Completion.

static void
group_destroy(tr_group *g)
{
    TR__ASSERT(list_empty(&g->g_running) && list_empty(&g->g_cancelling) && list_empty(&g->g_done));
    tr__free(g, sizeof *g);
}

// unref drops a reference and frees the group if it was the last.
static void
unref(tr_group *g)
{
    tr__mutex_lock(&g->g_lock);
    TR__ASSERT(g->g_refs > 0);
    bool last = --g->g_refs == 0;
    tr__mutex_unlock(&g->g_lock);
    if (last) {
        group_destroy(g);
    }
}

// cancel_running cancels every record in g_running, batch by batch, and
// marks the group cancelled. The caller holds a reference.
static void
cancel_running(tr_group *g)
{
    bool more = true;
    while (more) {
        uint64_t keys[CANCEL_BATCH];
        size_t n = 0;
        member *m;
        tr__mutex_lock(&g->g_lock);
        g->g_cancelled = true;
        while (n < CANCEL_BATCH && (m = list_pop(&g->g_running)) != NULL) {
            list_push(&g->g_cancelling, &m->m_link);
            keys[n++] = m->m_key;
        }
        more = !list_empty(&g->g_running);
        tr__mutex_unlock(&g->g_lock);
        for (size_t i = 0; i < n; i++) {
            // TR_EFINISHED or TR_ENOTFOUND when it got there first: fine.
            (void)tr_task_cancel(g->g_rt, (tr_task_id){keys[i]});
        }
    }
}

// failure_of classifies a member's outcome (group.h): TR_OK, or its error.
static tr_err
failure_of(const tr_group *g, const tr_outcome *out, bool boxed)
{
    if (out->err != TR_OK) {
        return out->err;
    }
    if (boxed || (g->g_flags & TR_GROUP_VALUES) || out->value.u64 == 0) {
        return TR_OK;
    }
    return out->value.u64 < (uint64_t)TR__ERR_COUNT ? (tr_err)out->value.u64 : TR_ESYSTEM;
}

// member_done runs once per member, when it has completed: from the
// completer's call of the registered waker (any worker), or from
// tr_group_start when the task had completed before the registration.
static void
member_done(member *m)
{
    tr_group *g = m->m_group;
    // Collect the outcome as a join would; the handle's reference goes.
    bool boxed = tr__task_collect(g->g_rt, m->m_key, &m->m_out);
    tr_err fail = failure_of(g, &m->m_out, boxed);

    tr_waker wake = no_waker;
    bool cancel_rest = false;
    tr__mutex_lock(&g->g_lock);
    list_unlink(&m->m_link);
    TR__ASSERT(g->g_nrunning > 0);
    g->g_nrunning--;
    if (fail != TR_OK && !g->g_failed) {
        g->g_failed = true;
        g->g_first_err = fail;
    }
    if (fail != TR_OK && (g->g_flags & TR_GROUP_CANCEL_ON_ERROR) && !g->g_cancelled) {
        g->g_cancelled = true;
        cancel_rest = true;
    }
    bool keep = !g->g_owner_gone;
    if (keep) {
        list_push(&g->g_done, &m->m_link);
        g->g_ndone++;
        if (g->g_waiter.ops != NULL && (g->g_want == WANT_NEXT || g->g_nrunning == 0)) {
            wake = g->g_waiter;
            g->g_waiter = no_waker;
        }
    }
    bool last = false;
    if (!cancel_rest) {
        TR__ASSERT(g->g_refs > 0);
        last = --g->g_refs == 0;
    }
    tr__mutex_unlock(&g->g_lock);
    // From here on, a kept record belongs to the joiner.
    if (!keep) {
        tr_outcome_fini(&m->m_out);
        tr__free(m, sizeof *m);
    }
    tr_wake(wake);
    if (cancel_rest) {
        cancel_running(g);
        unref(g);
    } else if (last) {
        group_destroy(g);
    }
}

static void
member_wake(const tr_waker *w)
{
    member_done((member *)w->data);
}

static const tr_waker_ops member_waker_ops = {member_wake};

// finish_locked ends a join that found nothing running: it takes the first
// failure and the uncollected records (for the caller to discard after the
// unlock) and resets the group for a new batch.
static tr_err
finish_locked(tr_group *g, mlink *taken)
{
    TR__ASSERT(g->g_nrunning == 0);
    tr_err err = g->g_failed ? g->g_first_err : TR_OK;
    g->g_failed = false;
    g->g_first_err = TR_OK;
    g->g_cancelled = false;
    g->g_waiter = no_waker;
    list_take(taken, &g->g_done);
    g->g_ndone = 0;
    return err;
}

// ---------------------------------------------------------------------------
// Public API.

tr_err
tr_group_new(tr_rt *rt, unsigned flags, tr_group **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    *out = NULL;
    if (rt == NULL || (flags & ~(unsigned)(TR_GROUP_CANCEL_ON_ERROR | TR_GROUP_VALUES)) != 0) {
        return TR_EINVAL;
    }
    tr_group *g = tr__zalloc(sizeof *g);
    g->g_lock = (tr__mutex)TR__MUTEX_INIT;
    g->g_rt = rt;
    g->g_flags = flags;
    list_init(&g->g_running);
    list_init(&g->g_cancelling);
    list_init(&g->g_done);
    g->g_refs = 1;
    *out = g;
    return TR_OK;
}

void
tr_group_free(tr_group *g)
{
    if (g == NULL) {
        return;
    }
    tr__mutex_lock(&g->g_lock);
    TR__ASSERT(!g->g_owner_gone);
    // A task that awaited the group and was cancelled may have left its
    // waker: forget it (a thread blocked in tr_group_wait would be a bug).
    g->g_waiter = no_waker;
    g->g_owner_gone = true;
    tr__mutex_unlock(&g->g_lock);
    cancel_running(g);
    mlink taken;
    tr__mutex_lock(&g->g_lock);
    list_take(&taken, &g->g_done);
    g->g_ndone = 0;
    bool last = --g->g_refs == 0;
    tr__mutex_unlock(&g->g_lock);
    discard(&taken);
    if (last) {
        group_destroy(g);
    }
}

tr_err
tr_group_start(tr_group *g, void *state, tr_task_id *id)
{
    tr__slot *s = tr__state_slot(state);
    TR__ASSERT(tr__slot_rt(s) == g->g_rt);
    member *m = tr__zalloc(sizeof *m);
    m->m_group = g;
    tr__mutex_lock(&g->g_lock);
    TR__ASSERT(!g->g_owner_gone);
    bool early = g->g_cancelled;
    tr__mutex_unlock(&g->g_lock);
    if (early) {
        // Cancelled before it can ever be polled (see the notes).
        tr__task_precancel(state);
    }
    tr_join j = TR_JOIN_NONE;
    tr_err rv = tr_task_start(state, &j);
    uint64_t key = tr_join_id(&j).id;
    if (id != NULL) {
        id->id = key;
    }
    if (rv != TR_OK) {
        // Refused (a shutdown): its drop ran and the slot is gone.
        tr__free(m, sizeof *m);
        return rv;
    }
    m->m_key = key;
    tr__mutex_lock(&g->g_lock);
    bool late = g->g_cancelled && !early;
    list_push((early || late) ? &g->g_cancelling : &g->g_running, &m->m_link);
    g->g_nrunning++;
    g->g_refs++;
    tr__mutex_unlock(&g->g_lock);
    // The handle's reference keeps s alive until member_done drops it. Once
    // registered, m may be completed (and freed) by another thread at any
    // moment: only the local copies are used below.
    if (!tr__join_register(s, (tr_waker){&member_waker_ops, m})) {
        member_done(m);
    }
    if (late) {
        // The group was cancelled while we started it.
        (void)tr_task_cancel(g->g_rt, (tr_task_id){key});
    }
    return TR_OK;
}

tr_poll
tr_group_join_all(tr_group *g, tr_cx *cx, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    mlink taken;
    tr__mutex_lock(&g->g_lock);
    if (g->g_nrunning > 0) {
        g->g_waiter = tr_cx_waker(cx);
        g->g_want = WANT_ALL;
        tr__mutex_unlock(&g->g_lock);
        return TR_PENDING;
    }
    tr_err e = finish_locked(g, &taken);
    tr__mutex_unlock(&g->g_lock);
    discard(&taken);
    *err = e;
    return TR_READY;
}

tr_poll
tr_group_join_next(tr_group *g, tr_cx *cx, tr_outcome *out, tr_task_id *id, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    mlink taken;
    tr__mutex_lock(&g->g_lock);
    member *m = list_pop(&g->g_done);
    if (m != NULL) {
        g->g_ndone--;
        if (tr_waker_eq(g->g_waiter, tr_cx_waker(cx))) {
            g->g_waiter = no_waker;
        }
        tr__mutex_unlock(&g->g_lock);
        *out = m->m_out;
        if (id != NULL) {
            id->id = m->m_key;
        }
        tr__free(m, sizeof *m);
        *err = TR_OK;
        return TR_READY;
    }
    if (g->g_nrunning > 0) {
        g->g_waiter = tr_cx_waker(cx);
        g->g_want = WANT_NEXT;
        tr__mutex_unlock(&g->g_lock);
        return TR_PENDING;
    }
    (void)finish_locked(g, &taken);
    tr__mutex_unlock(&g->g_lock);
    TR__ASSERT(list_empty(&taken));
    *err = TR_EEMPTY;
    return TR_READY;
}

// A waker for a plain thread blocked in tr_group_wait.
typedef struct thread_parker {
    _Atomic uint32_t tp_flag;
} thread_parker;

static void
parker_wake(const tr_waker *w)
{
    thread_parker *tp = (thread_parker *)w->data;
    // Pairs with the acquire load in tr_group_wait. After the store the
    // thread may return; the futex wake on its (still mapped) stack is
    // harmless, as in tr_join_wait.
    atomic_store_explicit(&tp->tp_flag, 1, memory_order_release);
    tr__futex_wake(&tp->tp_flag, 1);
}

static const tr_waker_ops parker_waker_ops = {parker_wake};

tr_err
tr_group_wait(tr_group *g, tr_err *err)
{
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    thread_parker tp;
    atomic_init(&tp.tp_flag, 0);
    tr_waker self = {&parker_waker_ops, &tp};
    mlink taken;
    for (;;) {
        tr__mutex_lock(&g->g_lock);
        if (g->g_nrunning == 0) {
            // Not registered now: every earlier registration was taken
            // and fired (we saw its flag) before we got here.
            tr_err e = finish_locked(g, &taken);
            tr__mutex_unlock(&g->g_lock);
            discard(&taken);
            if (err != NULL) {
                *err = e;
            }
            return TR_OK;
        }
        g->g_waiter = self;
        g->g_want = WANT_ALL;
        tr__mutex_unlock(&g->g_lock);
        // Registered: the member that empties the group takes the waker and
        // fires it, exactly once.
        while (atomic_load_explicit(&tp.tp_flag, memory_order_acquire) == 0) {
            tr__futex_wait(&tp.tp_flag, 0, UINT64_MAX);
        }
        atomic_store_explicit(&tp.tp_flag, 0, memory_order_relaxed);
    }
}

void
tr_group_cancel(tr_group *g)
{
    cancel_running(g);
}

size_t
tr_group_len(tr_group *g)
{
    tr__mutex_lock(&g->g_lock);
    size_t n = g->g_nrunning + g->g_ndone;
    tr__mutex_unlock(&g->g_lock);
    return n;
}

size_t
tr_group_running(tr_group *g)
{
    tr__mutex_lock(&g->g_lock);
    size_t n = g->g_nrunning;
    tr__mutex_unlock(&g->g_lock);
    return n;
}

tr_err
tr_group_spawn(tr_group *g, const tr_task_spec *spec, void (*init)(void *state, void *arg),
               void *arg, tr_task_id *id)
{
    if (id != NULL) {
        id->id = 0;
    }
    if (g == NULL) {
        return tr__fail(TR_EINVAL, "tr_group_spawn: NULL group");
    }
    void *state;
    tr_err rv = tr__task_prepare(g->g_rt, spec, init, arg, &state);
    if (rv != TR_OK) {
        return rv;
    }
    rv = tr_group_start(g, state, id);
    return rv == TR_ESHUTDOWN ? TR_ECANCELED : rv;
}

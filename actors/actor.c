// Design notes.
//
// An actor is a task whose state starts with its mailbox (so the mailbox
// sits on the 64-byte boundary the pool gives states of 128 bytes or more),
// then a few words, then the user's state. Everything that only some actors
// need (monitors, links, pending requests, a name, senders waiting for
// room) lives in an extension allocated on first use, so an idle actor with
// a small state is one 256-byte pool slot plus its 16-byte table entry.
//
// Reaching an actor from any thread goes through the address table: a send
// holds the actor's entry for the length of one push, so the actor's state
// (its mailbox) stays valid while the push runs. A stopping actor closes its
// entry (no new holder), waits until the holders have left (the last one
// wakes its task), and only then finalises its mailbox: no message can be
// pushed after the drain, so none leaks. Holds are only ever that short:
// a sender that waits for room in a bounded mailbox registers its waker in
// the actor's extension (under the actor's lock, during a hold) and lets go,
// so a stopping actor never waits for a sender that waits for it.
//
// Order between one sender and one receiver is the mailbox's FIFO order per
// producer. Down and Exit are pushed on the user lane (ignoring the bound,
// which never refuses them), after everything the stopping actor sent; only
// a Stop uses the system lane, which jumps the queue.
//
// A behaviour runs to completion on a worker; self is a per-turn handle on
// that worker's stack (tr_actor), which is why it is valid only inside the
// callbacks.
#include <pthread.h>
#include <string.h>

#include "actor_int.h"

#include <troupe/v1/node.pb-c.h>

// ---------------------------------------------------------------------------
// Types.

typedef struct monitor {
    uint64_t mo_ref;
    tr_actor_addr mo_watcher;
} monitor;

typedef struct request {
    uint64_t rq_corr;
    uint64_t rq_ref; // the monitor of the callee
    tr_actor_addr rq_callee;
    tr_join rq_timer; // the timeout task, or empty
} request;

// The extension. Fields marked "lock" are under a_lock (other threads add
// monitors, links and waiters); the others are the actor's own.
typedef struct tra_ext {
    monitor *x_mon; // lock: who watches this actor
    size_t x_nmon, x_capmon;
    tr_actor_addr *x_links; // lock
    size_t x_nlinks, x_caplinks;
    tr_waker *x_wait; // lock: senders waiting for room
    size_t x_nwait, x_capwait;
    _Atomic uint32_t x_nwaiters; // x_nwait, readable without the lock
    uint32_t x_pad;
    request *x_req; // own: requests awaiting a reply
    size_t x_nreq, x_capreq;
    char *x_name; // lock: the registered name
    tr_rt *x_name_rt;
    char *x_text; // own: the stop reason's text
    void *x_sup;  // own: supervisor data
} tra_ext;

enum {
    F_TRAP = 1u << 0,
    F_STOPPING = 1u << 1,
    F_CLOSED = 1u << 2,
    F_SUP = 1u << 3,
    F_INITFAIL = 1u << 5, // its init failed: stopped does not run
    F_DONE = 1u << 4,     // finished: the drop that follows READY has nothing to do
    F_POLLED = 1u << 6,   // its task's waker is recorded in the mailbox
};

// 128 bytes: the mailbox (96), then the actor's own words, read mostly by
// the actor itself, then the user's state. With the task's slot header an
// actor of up to 32 bytes of state is a 224-byte pool slot (actor_create:
// B per idle actor), whose mailbox is on a 32-byte boundary
// (troupe/mailbox.h: its hot words stay apart). The task's waker is the
// mailbox's (tr_mailbox_set_waker at the first poll,
// tr_mailbox_wake_consumer).
typedef struct tra_actor {
    tr_mailbox a_mb;
    const tr_actor_spec *a_spec;
    uint64_t a_id;
    _Atomic(tra_ext *) a_ext; // created under a_lock, then never changes
    _Atomic uint32_t a_lock;  // a futex mutex: 0 free, 1 held, 2 contended
    uint16_t a_flags;         // own: F_*
    uint8_t a_reason;         // own: the stop reason (a tr_err)
    uint8_t a_pad;
    _Alignas(16) unsigned char a_user[];
} tra_actor;

_Static_assert(offsetof(tra_actor, a_user) == 128, "an actor's own words end at 128 bytes");

struct tr_actor {
    tra_actor *t_a;
    tr_cx *t_cx; // NULL in init
    tr_rt *t_rt;
    tr_msg *t_cur;  // the message receive is handling, NULL once passed on
    bool t_replied; // receive answered t_cur
};

typedef struct endpoint {
    uint64_t ep_id;
    uint64_t ep_corr;
    uint64_t ep_ref;
    tr_waker ep_waker;
    _Atomic(tr_msg *) ep_msg;
} endpoint;

static _Atomic uint64_t g_next_ref = 1;

static uint64_t
fresh_ref(void)
{
    // Relaxed: uniqueness only.
    return atomic_fetch_add_explicit(&g_next_ref, 1, memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// The actor's lock: a three-state futex mutex (Drepper, "Futexes are
// tricky"). Held for a few instructions by other threads adding monitors,
// links or waiters.

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static void
lock(tra_actor *a)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong_explicit(&a->a_lock, &c, 1, memory_order_acquire,
                                                memory_order_relaxed)) {
        return;
    }
    if (c != 2) {
        c = atomic_exchange_explicit(&a->a_lock, 2, memory_order_acquire);
    }
    while (c != 0) {
        syscall(SYS_futex, &a->a_lock, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = atomic_exchange_explicit(&a->a_lock, 2, memory_order_acquire);
    }
}

static void
unlock(tra_actor *a)
{
    if (atomic_exchange_explicit(&a->a_lock, 0, memory_order_release) == 2) {
        syscall(SYS_futex, &a->a_lock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}

char *
tra_strdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *p = tra_zalloc(n);
    memcpy(p, s, n);
    return p;
}

void *
tra_zalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        tra_panic("out of memory");
    }
    return p;
}

static void
grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return;
    }
    size_t n = *cap == 0 ? 4 : *cap * 2;
    while (n < need) {
        n *= 2;
    }
    void *p = realloc(*arr, n * elem);
    if (p == NULL) {
        tra_panic("out of memory");
    }
    *arr = p;
    *cap = n;
}

// ext_locked returns a's extension, creating it (under a_lock).
static tra_ext *
ext_locked(tra_actor *a)
{
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_relaxed);
    if (x == NULL) {
        x = tra_zalloc(sizeof *x);
        // Release: the actor's acquire load sees an initialised extension.
        atomic_store_explicit(&a->a_ext, x, memory_order_release);
    }
    return x;
}

static tra_ext *
ext_get(tra_actor *a)
{
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_acquire);
    if (x == NULL) {
        lock(a);
        x = ext_locked(a);
        unlock(a);
    }
    return x;
}

static tr_actor_addr
addr_of(const tra_actor *a)
{
    return (tr_actor_addr){0, a->a_id};
}

// ---------------------------------------------------------------------------
// Delivery.

#define LANE_TRY TRA_LANE_TRY
#define LANE_FORCE TRA_LANE_FORCE
#define LANE_SYSTEM TRA_LANE_SYSTEM

static void endpoint_final(endpoint *ep);
static tr_err monitor_ref(tr_actor_addr watcher, tr_actor_addr target, uint64_t ref);

// A call's watch of its callee. A local callee is monitored (its Down fails
// the call at once, even for a request it kept). A remote one is not
// monitored across the network per call (two more messages per round
// trip): the node watches the peer (its death fails the call), and a
// callee that stops without answering a request answers it with a
// CallFailed (fail_request), on its node as here.
static tr_err
call_watch(tr_actor_addr watcher, tr_actor_addr callee, uint64_t ref)
{
    if (callee.node != 0) {
        return tra_node_watch(watcher, callee, ref, false);
    }
    return monitor_ref(watcher, callee, ref);
}

static void
call_unwatch(tr_actor_addr callee, uint64_t ref)
{
    if (callee.node != 0) {
        tra_node_unwatch(callee, ref, false);
    } else {
        tr_actor_demonitor(callee, ref);
    }
}

// finalise runs for the last holder of a closed entry.
static void
finalise(void *ptr)
{
    if ((uintptr_t)ptr & 1) {
        endpoint_final((endpoint *)((uintptr_t)ptr & ~(uintptr_t)1));
    } else {
        // The actor's task waits for its last holder: wake it.
        tr_mailbox_wake_consumer(&((tra_actor *)ptr)->a_mb);
    }
}

static void
endpoint_deliver(endpoint *ep, tr_msg *m)
{
    tra_msg *am = tra_msg_of(m);
    bool wanted =
        (am->am_kind == TRA_K_REPLY && am->am_corr == ep->ep_corr) ||
        (am->am_kind == TRA_K_DOWN && ((Troupe__V1__Down *)am->am_body)->ref == ep->ep_ref);
    tr_msg *none = NULL;
    // acq_rel: the caller's acquire load sees the message's contents.
    if (wanted && atomic_compare_exchange_strong_explicit(
                      &ep->ep_msg, &none, m, memory_order_acq_rel, memory_order_relaxed)) {
        tr_wake(ep->ep_waker);
        return;
    }
    tr_msg_free(m);
}

// deliver hands m to the actor or endpoint at to. TR_OK takes m.
static tr_err
deliver(tr_actor_addr to, tr_msg *m, int lane)
{
    if (TRA_UNLIKELY(to.node != 0)) {
        return tra_node_deliver(to, m, lane);
    }
    void *ptr;
    tra_entry *e = tra_table_acquire(to.actor, &ptr);
    if (e == NULL) {
        return TR_ENOTFOUND;
    }
    tr_err err = TR_OK;
    if ((uintptr_t)ptr & 1) {
        endpoint_deliver((endpoint *)((uintptr_t)ptr & ~(uintptr_t)1), m);
    } else {
        tra_actor *a = ptr;
        if (lane == LANE_SYSTEM) {
            tr_mailbox_push_system(&a->a_mb, m);
        } else if (lane == LANE_FORCE) {
            tr_mailbox_push(&a->a_mb, m);
        } else {
            // (An unbounded mailbox always has room: no check of its own.)
            err = tr_mailbox_try_push(&a->a_mb, m, NULL);
        }
    }
    if (tra_table_release(e)) {
        finalise(ptr);
    }
    return err;
}

// reason_msg builds a message of type d whose Reason field *slot gets code
// and text.
static Troupe__V1__Reason *
new_reason(tr_msg *m, tr_err code, const char *text)
{
    Troupe__V1__Reason *r = tr_msg_arena(m, sizeof *r);
    troupe__v1__reason__init(r);
    r->code = (int32_t)code;
    if (text != NULL && *text != '\0') {
        r->text = tr_msg_strdup(m, text);
    }
    return r;
}

Troupe__V1__Address *
tra_new_address(tr_msg *m, tr_actor_addr a)
{
    Troupe__V1__Address *p = tr_msg_arena(m, sizeof *p);
    troupe__v1__address__init(p);
    p->node = a.node;
    p->actor = a.actor;
    return p;
}

static tr_msg *
new_down(tr_actor_addr from, uint64_t ref, tr_err reason, const char *text)
{
    Troupe__V1__Down *d;
    tr_msg *m = tr_msg_new(&troupe__v1__down__descriptor, 96, (void **)&d);
    d->ref = ref;
    d->actor = tra_new_address(m, from);
    d->reason = new_reason(m, reason, text);
    tra_msg *am = tra_msg_of(m);
    am->am_kind = TRA_K_DOWN;
    am->am_from = from;
    return m;
}

static tr_msg *
new_exit(tr_actor_addr from, tr_err reason, const char *text)
{
    Troupe__V1__Exit *x;
    tr_msg *m = tr_msg_new(&troupe__v1__exit__descriptor, 96, (void **)&x);
    x->from = tra_new_address(m, from);
    x->reason = new_reason(m, reason, text);
    tra_msg *am = tra_msg_of(m);
    am->am_kind = TRA_K_EXIT;
    am->am_from = from;
    return m;
}

static tr_msg *
new_call_failed(uint64_t corr, tr_actor_addr callee, tr_err reason, const char *text)
{
    Troupe__V1__CallFailed *f;
    tr_msg *m = tr_msg_new(&troupe__v1__call_failed__descriptor, 96, (void **)&f);
    f->correlation = corr;
    f->callee = tra_new_address(m, callee);
    f->reason = new_reason(m, reason, text);
    tra_msg_of(m)->am_corr = corr;
    tra_msg_of(m)->am_from = callee;
    return m;
}

// ---------------------------------------------------------------------------
// Endpoints: where a task's call waits for its reply.

static endpoint *
endpoint_new(tr_cx *cx)
{
    endpoint *ep = tra_zalloc(sizeof *ep);
    ep->ep_waker = tr_cx_waker(cx);
    atomic_init(&ep->ep_msg, NULL);
    ep->ep_id = tra_table_alloc((void *)((uintptr_t)ep | 1));
    return ep;
}

static void
endpoint_final(endpoint *ep)
{
    tr_msg *m = atomic_load_explicit(&ep->ep_msg, memory_order_acquire);
    if (m != NULL) {
        tr_msg_free(m);
    }
    tra_table_free(ep->ep_id);
    free(ep);
}

static void
endpoint_close(endpoint *ep)
{
    if (tra_table_close(ep->ep_id)) {
        endpoint_final(ep);
    }
}

// ---------------------------------------------------------------------------
// Monitors and links, on the target's side.

// with_actor runs fn on the actor at addr while holding it (under its lock
// when locked): TR_OK, or TR_ENOTFOUND.
static tr_err
with_actor(tr_actor_addr addr, bool locked, void (*fn)(tra_actor *a, void *arg), void *arg)
{
    if (addr.node != 0) {
        return TR_ENOTFOUND;
    }
    void *ptr;
    tra_entry *e = tra_table_acquire(addr.actor, &ptr);
    if (e == NULL) {
        return TR_ENOTFOUND;
    }
    if ((uintptr_t)ptr & 1) {
        if (tra_table_release(e)) {
            finalise(ptr);
        }
        return TR_ENOTFOUND; // an endpoint is not an actor
    }
    tra_actor *a = ptr;
    if (locked) {
        lock(a);
    }
    fn(a, arg);
    if (locked) {
        unlock(a);
    }
    if (tra_table_release(e)) {
        finalise(ptr);
    }
    return TR_OK;
}

struct mon_arg {
    monitor mo;
};

static void
add_monitor(tra_actor *a, void *arg)
{
    tra_ext *x = ext_locked(a);
    grow((void **)&x->x_mon, &x->x_capmon, x->x_nmon + 1, sizeof(monitor));
    x->x_mon[x->x_nmon++] = ((struct mon_arg *)arg)->mo;
}

static void
del_monitor(tra_actor *a, void *arg)
{
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_relaxed);
    uint64_t ref = *(uint64_t *)arg;
    if (x == NULL) {
        return;
    }
    for (size_t i = 0; i < x->x_nmon; i++) {
        if (x->x_mon[i].mo_ref == ref) {
            x->x_mon[i] = x->x_mon[--x->x_nmon];
            return;
        }
    }
}

static void
add_link(tra_actor *a, void *arg)
{
    tra_ext *x = ext_locked(a);
    tr_actor_addr other = *(tr_actor_addr *)arg;
    for (size_t i = 0; i < x->x_nlinks; i++) {
        if (tr_actor_addr_eq(x->x_links[i], other)) {
            return;
        }
    }
    grow((void **)&x->x_links, &x->x_caplinks, x->x_nlinks + 1, sizeof(tr_actor_addr));
    x->x_links[x->x_nlinks++] = other;
}

static void
del_link(tra_actor *a, void *arg)
{
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_relaxed);
    tr_actor_addr other = *(tr_actor_addr *)arg;
    if (x == NULL) {
        return;
    }
    for (size_t i = 0; i < x->x_nlinks; i++) {
        if (tr_actor_addr_eq(x->x_links[i], other)) {
            x->x_links[i] = x->x_links[--x->x_nlinks];
            return;
        }
    }
}

struct wait_arg {
    tr_waker wk;
};

static void
add_waiter(tra_actor *a, void *arg)
{
    tra_ext *x = ext_locked(a);
    grow((void **)&x->x_wait, &x->x_capwait, x->x_nwait + 1, sizeof(tr_waker));
    x->x_wait[x->x_nwait++] = ((struct wait_arg *)arg)->wk;
    // seq_cst: the sender's side of the Dekker pair with wake_waiters (the
    // sender then tries its push again).
    atomic_store_explicit(&x->x_nwaiters, (uint32_t)x->x_nwait, memory_order_seq_cst);
}

// wake_waiters wakes the senders waiting for room (all of them: each tries
// again, and those that find the mailbox full again wait again). The actor's.
static void
wake_waiters(tra_actor *a)
{
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_acquire);
    // seq_cst: the consumer's side of the Dekker pair with add_waiter (after
    // the mailbox's seq_cst count of the messages taken).
    if (x == NULL || atomic_load_explicit(&x->x_nwaiters, memory_order_seq_cst) == 0) {
        return;
    }
    lock(a);
    size_t n = x->x_nwait;
    tr_waker *w = x->x_wait;
    x->x_wait = NULL;
    x->x_nwait = 0;
    x->x_capwait = 0;
    atomic_store_explicit(&x->x_nwaiters, 0, memory_order_relaxed);
    unlock(a);
    for (size_t i = 0; i < n; i++) {
        tr_wake(w[i]);
    }
    free(w);
}

// ---------------------------------------------------------------------------
// Names (per runtime).

#define NAME_MAX_LEN 64
#define NBUCKETS 256

typedef struct name_ent {
    struct name_ent *n_next;
    tr_actor_addr n_addr;
    char n_name[];
} name_ent;

typedef struct names {
    pthread_mutex_t nm_lock;
    name_ent *nm_b[NBUCKETS];
} names;

static tr_rt_key g_names_key;
static pthread_once_t g_names_once = PTHREAD_ONCE_INIT;

static void
names_fini(tr_rt *rt, void *value)
{
    (void)rt;
    names *nm = value;
    for (size_t i = 0; i < NBUCKETS; i++) {
        name_ent *e = nm->nm_b[i];
        while (e != NULL) {
            name_ent *n = e->n_next;
            free(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&nm->nm_lock);
    free(nm);
}

static void
names_key(void)
{
    if (tr_rt_key_create(&g_names_key, names_fini) != TR_OK) {
        tra_panic("tr_rt_key_create failed");
    }
}

static pthread_mutex_t g_names_make = PTHREAD_MUTEX_INITIALIZER;

static names *
names_of(tr_rt *rt)
{
    pthread_once(&g_names_once, names_key);
    names *nm = tr_rt_local_get(rt, g_names_key);
    if (nm == NULL) {
        pthread_mutex_lock(&g_names_make);
        nm = tr_rt_local_get(rt, g_names_key);
        if (nm == NULL) {
            nm = tra_zalloc(sizeof *nm);
            pthread_mutex_init(&nm->nm_lock, NULL);
            tr_rt_local_set(rt, g_names_key, nm);
        }
        pthread_mutex_unlock(&g_names_make);
    }
    return nm;
}

static bool
name_valid(const char *name)
{
    if (name == NULL) {
        return false;
    }
    size_t n = 0;
    for (const char *p = name; *p != '\0'; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok || n >= NAME_MAX_LEN) {
            return false;
        }
    }
    return n > 0;
}

static size_t
name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return (size_t)(h % NBUCKETS);
}

// name_remove removes name if it still names addr.
static void
name_remove(tr_rt *rt, const char *name, tr_actor_addr addr)
{
    names *nm = names_of(rt);
    pthread_mutex_lock(&nm->nm_lock);
    name_ent **pp = &nm->nm_b[name_hash(name)];
    for (; *pp != NULL; pp = &(*pp)->n_next) {
        if (strcmp((*pp)->n_name, name) == 0) {
            if (tr_actor_addr_eq((*pp)->n_addr, addr)) {
                name_ent *e = *pp;
                *pp = e->n_next;
                free(e);
            }
            break;
        }
    }
    pthread_mutex_unlock(&nm->nm_lock);
}

struct reg_arg {
    tr_rt *rt;
    const char *name;
    tr_err err;
};

static void
reg_on_actor(tra_actor *a, void *arg)
{
    struct reg_arg *ra = arg;
    tra_ext *x = ext_locked(a);
    if (x->x_name != NULL) {
        ra->err = TR_EEXIST; // one name per actor
        return;
    }
    names *nm = names_of(ra->rt);
    size_t len = strlen(ra->name);
    pthread_mutex_lock(&nm->nm_lock);
    size_t b = name_hash(ra->name);
    for (name_ent *e = nm->nm_b[b]; e != NULL; e = e->n_next) {
        if (strcmp(e->n_name, ra->name) == 0) {
            pthread_mutex_unlock(&nm->nm_lock);
            ra->err = TR_EEXIST;
            return;
        }
    }
    name_ent *e = tra_zalloc(sizeof *e + len + 1);
    memcpy(e->n_name, ra->name, len + 1);
    e->n_addr = addr_of(a);
    e->n_next = nm->nm_b[b];
    nm->nm_b[b] = e;
    pthread_mutex_unlock(&nm->nm_lock);
    x->x_name = tra_zalloc(len + 1);
    memcpy(x->x_name, ra->name, len + 1);
    x->x_name_rt = ra->rt;
    ra->err = TR_OK;
}

tr_err
tr_actor_register(tr_rt *rt, const char *name, tr_actor_addr addr)
{
    if (rt == NULL || !name_valid(name)) {
        return TR_EINVAL;
    }
    struct reg_arg ra = {rt, name, TR_OK};
    tr_err err = with_actor(addr, true, reg_on_actor, &ra);
    return err != TR_OK ? err : ra.err;
}

tr_err
tr_actor_whereis(tr_rt *rt, const char *name, tr_actor_addr *addr)
{
    if (rt == NULL || !name_valid(name)) {
        return TR_EINVAL;
    }
    names *nm = names_of(rt);
    tr_err err = TR_ENOTFOUND;
    pthread_mutex_lock(&nm->nm_lock);
    for (name_ent *e = nm->nm_b[name_hash(name)]; e != NULL; e = e->n_next) {
        if (strcmp(e->n_name, name) == 0) {
            if (addr != NULL) {
                *addr = e->n_addr;
            }
            err = TR_OK;
            break;
        }
    }
    pthread_mutex_unlock(&nm->nm_lock);
    return err;
}

static void
unreg_on_actor(tra_actor *a, void *arg)
{
    (void)arg;
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_relaxed);
    if (x != NULL) {
        free(x->x_name);
        x->x_name = NULL;
    }
}

tr_err
tr_actor_unregister(tr_rt *rt, const char *name)
{
    if (rt == NULL || !name_valid(name)) {
        return TR_EINVAL;
    }
    names *nm = names_of(rt);
    pthread_mutex_lock(&nm->nm_lock);
    name_ent **pp = &nm->nm_b[name_hash(name)];
    name_ent *found = NULL;
    for (; *pp != NULL; pp = &(*pp)->n_next) {
        if (strcmp((*pp)->n_name, name) == 0) {
            found = *pp;
            *pp = found->n_next;
            break;
        }
    }
    pthread_mutex_unlock(&nm->nm_lock);
    if (found == NULL) {
        return TR_ENOTFOUND;
    }
    with_actor(found->n_addr, true, unreg_on_actor, NULL);
    free(found);
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Requests: an actor's calls.

typedef struct timer_task {
    tr_timer tt_timer;
    uint64_t tt_ns;
    uint64_t tt_corr;
    tr_actor_addr tt_self;
    tr_actor_addr tt_callee;
    int tr_pc;
} timer_task;

static tr_poll
timer_poll(void *st, tr_cx *cx)
{
    timer_task *t = st;
    if (tr_sleep(&t->tt_timer, cx, t->tt_ns) == TR_PENDING) {
        return TR_PENDING;
    }
    tr_msg *m = new_call_failed(t->tt_corr, t->tt_callee, TR_ETIMEDOUT, "call timed out");
    tra_msg_of(m)->am_kind = TRA_K_TIMEOUT;
    if (deliver(t->tt_self, m, LANE_FORCE) != TR_OK) {
        tr_msg_free(m);
    }
    return TR_READY;
}

static void
timer_drop(void *st)
{
    tr_timer_abandon(&((timer_task *)st)->tt_timer);
}

static const tr_task_spec timer_spec = {
    .name = "tr.actor.call_timeout",
    .poll = timer_poll,
    .drop = timer_drop,
    .size = sizeof(timer_task),
};

static void
request_end(request *rq)
{
    if (rq->rq_timer.j_key != 0) {
        tr_task_abort(&rq->rq_timer);
        tr_join_release(&rq->rq_timer);
    }
    call_unwatch(rq->rq_callee, rq->rq_ref);
}

// request_take removes the request whose correlation id (by_ref false) or
// monitor (by_ref true) is key: true and *out, or false.
static bool
request_take(tra_actor *a, uint64_t key, bool by_ref, request *out)
{
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_relaxed);
    if (x == NULL) {
        return false;
    }
    for (size_t i = 0; i < x->x_nreq; i++) {
        if ((by_ref ? x->x_req[i].rq_ref : x->x_req[i].rq_corr) == key) {
            *out = x->x_req[i];
            x->x_req[i] = x->x_req[--x->x_nreq];
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------
// The actor's task.

static void stop_now(tr_actor *self, tr_err reason, const char *text);
static void fail_request(tra_actor *a, tr_msg *m);

static void
deliver_user(tr_actor *self, tr_msg *m)
{
    tra_actor *a = self->t_a;
    self->t_cur = m;
    self->t_replied = false;
    a->a_spec->receive(self, a->a_user, m);
    if (self->t_cur != NULL) {
        if ((a->a_flags & F_STOPPING) && !self->t_replied) {
            fail_request(a, self->t_cur); // it stopped without answering
        } else {
            tr_msg_free(self->t_cur);
        }
        self->t_cur = NULL;
    }
}

static void
dispatch(tr_actor *self, tr_msg *m)
{
    tra_actor *a = self->t_a;
    tra_msg *am = tra_msg_of(m);
    request rq;
    switch (am->am_kind) {
    case TRA_K_USER:
    case TRA_K_WIRE: // only the node's bridge gets these
        deliver_user(self, m);
        return;
    case TRA_K_REPLY:
        if (request_take(a, am->am_corr, false, &rq)) {
            request_end(&rq);
            deliver_user(self, m);
        } else {
            tr_msg_free(m); // late: the request failed already
        }
        return;
    case TRA_K_TIMEOUT:
        if (request_take(a, am->am_corr, false, &rq)) {
            rq.rq_timer = TR_JOIN_NONE; // it is the timer that sent this
            request_end(&rq);
            am->am_kind = TRA_K_USER;
            deliver_user(self, m);
        } else {
            tr_msg_free(m);
        }
        return;
    case TRA_K_DOWN: {
        Troupe__V1__Down *d = am->am_body;
        if (request_take(a, d->ref, true, &rq)) {
            if (rq.rq_timer.j_key != 0) {
                tr_task_abort(&rq.rq_timer);
                tr_join_release(&rq.rq_timer);
            }
            tr_err why = tr_msg_reason_err(d->reason);
            tr_msg *f = new_call_failed(rq.rq_corr, rq.rq_callee, why == TR_OK ? TR_ECLOSED : why,
                                        tr_msg_reason_text(d->reason));
            tr_msg_free(m);
            deliver_user(self, f);
        } else {
            am->am_kind = TRA_K_USER;
            deliver_user(self, m);
        }
        return;
    }
    case TRA_K_EXIT: {
        Troupe__V1__Exit *x = am->am_body;
        tr_err why = tr_msg_reason_err(x->reason);
        tr_actor_addr from = am->am_from;
        with_actor(addr_of(a), true, del_link, &from);
        if (a->a_flags & F_TRAP) {
            am->am_kind = TRA_K_USER;
            deliver_user(self, m);
        } else {
            if (why != TR_OK) {
                stop_now(self, why, tr_msg_reason_text(x->reason));
            }
            tr_msg_free(m);
        }
        return;
    }
    case TRA_K_STOP: {
        Troupe__V1__Stop *s = am->am_body;
        stop_now(self, tr_msg_reason_err(s->reason), tr_msg_reason_text(s->reason));
        tr_msg_free(m);
        return;
    }
    default:
        tr_msg_free(m);
        return;
    }
}

// fail_request frees m; when it is a request (a correlation id and a
// reply-to), its caller first gets a CallFailed answer with the reason the
// actor stopped for (a normal stop: TR_ECLOSED): a call never waits for an
// answer that cannot come.
static void
fail_request(tra_actor *a, tr_msg *m)
{
    tra_msg *am = tra_msg_of(m);
    if (tra_msg_valid(m) && am->am_kind == TRA_K_USER && am->am_corr != 0 &&
        !tr_actor_addr_is_none(am->am_reply)) {
        tr_err why = (tr_err)a->a_reason;
        tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_acquire);
        tr_msg *f = new_call_failed(am->am_corr, addr_of(a), why == TR_OK ? TR_ECLOSED : why,
                                    x != NULL && x->x_text != NULL ? x->x_text : "callee stopped");
        tra_msg_of(f)->am_kind = TRA_K_REPLY;
        if (deliver(am->am_reply, f, LANE_FORCE) != TR_OK) {
            tr_msg_free(f);
        }
    }
    tr_msg_free(m);
}

static void
stop_now(tr_actor *self, tr_err reason, const char *text)
{
    tra_actor *a = self->t_a;
    if (a->a_flags & F_STOPPING) {
        return;
    }
    a->a_flags |= F_STOPPING;
    a->a_reason = (uint8_t)reason;
    if (text != NULL && *text != '\0') {
        tra_ext *x = ext_get(a);
        size_t n = strlen(text);
        x->x_text = tra_zalloc(n + 1);
        memcpy(x->x_text, text, n + 1);
    }
}

void
tr_actor_stop(tr_actor *self, tr_err reason, const char *text)
{
    stop_now(self, reason, text);
}

static void
drop_msg(tr_msg *m, void *arg)
{
    fail_request(arg, m);
}

// finish is the end of an actor nobody holds any more: its mailbox is
// drained, monitors and links are told, its state is released.
static void
finish(tr_actor *self)
{
    tra_actor *a = self->t_a;
    tr_mailbox_fini(&a->a_mb, drop_msg, a);
    tra_ext *x = atomic_load_explicit(&a->a_ext, memory_order_acquire);
    tr_err reason = (tr_err)a->a_reason;
    tr_actor_addr me = addr_of(a);
    const char *text = (x != NULL && x->x_text != NULL) ? x->x_text : NULL;
    if (x != NULL) {
        // Nobody else can touch the extension now: no lock needed.
        if (x->x_name != NULL) {
            name_remove(x->x_name_rt, x->x_name, me);
        }
        for (size_t i = 0; i < x->x_nreq; i++) {
            request_end(&x->x_req[i]);
        }
        for (size_t i = 0; i < x->x_nmon; i++) {
            tr_msg *d = new_down(me, x->x_mon[i].mo_ref, reason, text);
            if (deliver(x->x_mon[i].mo_watcher, d, LANE_FORCE) != TR_OK) {
                tr_msg_free(d);
            }
        }
        for (size_t i = 0; i < x->x_nlinks; i++) {
            tr_msg *e = new_exit(me, reason, text);
            if (deliver(x->x_links[i], e, LANE_FORCE) != TR_OK) {
                tr_msg_free(e);
            }
        }
        for (size_t i = 0; i < x->x_nwait; i++) {
            tr_wake(x->x_wait[i]);
        }
    }
    if (a->a_spec->stopped != NULL && !(a->a_flags & F_INITFAIL)) {
        a->a_spec->stopped(self, a->a_user, reason);
    }
    if (x != NULL) {
        free(x->x_mon);
        free(x->x_links);
        free(x->x_wait);
        free(x->x_req);
        free(x->x_name);
        free(x->x_text);
        free(x);
        atomic_store_explicit(&a->a_ext, NULL, memory_order_relaxed);
    }
    tra_table_free(a->a_id);
    a->a_flags |= F_DONE;
}

// stopping runs the stop of an actor: close the entry, wait for holders to
// leave (the last one wakes the task), then finish.
static tr_poll
stopping(tr_actor *self)
{
    tra_actor *a = self->t_a;
    if (!(a->a_flags & F_CLOSED)) {
        a->a_flags |= F_CLOSED;
        if (!tra_table_close(a->a_id)) {
            wake_waiters(a);
            return TR_PENDING; // the last holder wakes the task
        }
    } else if (tra_table_holders(a->a_id) != 0) {
        return TR_PENDING; // a spurious wake: the last holder wakes it again
    }
    wake_waiters(a);
    finish(self);
    return TR_READY;
}

static tr_poll
actor_poll(void *st, tr_cx *cx)
{
    tra_actor *a = st;
    tr_actor self = {a, cx, NULL, NULL, false}; // t_rt: tr_actor_rt asks cx
    if (TRA_UNLIKELY(!(a->a_flags & F_POLLED))) {
        a->a_flags |= F_POLLED;
        tr_mailbox_set_waker(&a->a_mb, tr_cx_waker(cx));
    }
    if (TRA_UNLIKELY(a->a_flags & F_STOPPING)) {
        return stopping(&self);
    }
    tr_msg *batch[TR_ACTOR_BATCH];
    size_t done = 0;
    bool retried = false;
    while (done < TR_ACTOR_BATCH) {
        size_t want = TR_ACTOR_BATCH - done;
        size_t n = tr_mailbox_take(&a->a_mb, batch, want);
        if (n == 0) {
            if (done > 0) {
                wake_waiters(a);
            }
            if (tr_mailbox_markempty(&a->a_mb, tr_cx_waker(cx))) {
                return TR_PENDING;
            }
            if (retried) {
                // Only a push in its window: look again after the others.
                tr_cx_yield(cx);
                return TR_PENDING;
            }
            retried = true;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            dispatch(&self, batch[i]);
            if (TRA_UNLIKELY(a->a_flags & F_STOPPING)) {
                for (size_t j = i + 1; j < n; j++) {
                    fail_request(a, batch[j]);
                }
                return stopping(&self);
            }
        }
        done += n;
        if (n < want && done < TR_ACTOR_BATCH) {
            // A take that came back short finds nothing next, mostly: mark
            // the mailbox empty straight away (false: a message came
            // meanwhile, take it).
            wake_waiters(a);
            if (tr_mailbox_markempty(&a->a_mb, tr_cx_waker(cx))) {
                return TR_PENDING;
            }
        }
    }
    wake_waiters(a);
    tr_cx_yield(cx);
    return TR_PENDING;
}

// actor_drop runs when the runtime cancels the actor (a shutdown).
static void
actor_drop(void *st)
{
    tra_actor *a = st;
    tr_actor self = {a, NULL, NULL, NULL, false};
    if (a->a_id == 0 || (a->a_flags & F_DONE)) {
        return; // never reachable (its init failed), or finished by its poll
    }
    if (!(a->a_flags & F_STOPPING)) {
        a->a_flags |= F_STOPPING;
        a->a_reason = (uint8_t)TR_ESHUTDOWN;
    }
    if (!(a->a_flags & F_CLOSED)) {
        a->a_flags |= F_CLOSED;
        tra_table_close(a->a_id);
    }
    // Holders hold for the length of one push or one registration: wait for
    // them to leave (a shutdown's last step, never a hot path).
    while (tra_table_holders(a->a_id) != 0) {
        sched_yield();
    }
    finish(&self);
}

static const tr_task_spec actor_task = {
    .name = "tr.actor",
    .poll = actor_poll,
    .drop = actor_drop,
    .size = sizeof(tra_actor), // the user's state is added per spawn
};

// ---------------------------------------------------------------------------
// Spawning.

#define MAX_USER_STATE 4096

struct spawn_arg {
    const tr_actor_spec *spec;
    void *arg;
    const tr_actor_opts *opts;
    uint32_t flags; // spec's and opts' flags
    tr_rt *rt;
    tr_err err;
    uint64_t id;
};

// Task specs, one per 16 bytes of user state (a spec is static storage).
#define NSIZE ((MAX_USER_STATE / 16) + 1)
static tr_task_spec g_specs[NSIZE];
static pthread_once_t g_specs_once = PTHREAD_ONCE_INIT;

static void
specs_init(void)
{
    for (size_t i = 0; i < NSIZE; i++) {
        g_specs[i] = actor_task;
        // From a_user (128): the actor's words, then i * 16 of the user's.
        g_specs[i].size = offsetof(tra_actor, a_user) + i * 16;
    }
}

static void
spawn_init(void *st, void *argp)
{
    struct spawn_arg *sa = argp;
    tra_actor *a = st;
    uint32_t bound = sa->opts != NULL && sa->opts->bound != 0 ? sa->opts->bound : sa->spec->bound;
    tr_mailbox_init(&a->a_mb, bound);
    a->a_spec = sa->spec;
    atomic_init(&a->a_ext, NULL);
    atomic_init(&a->a_lock, 0);
    a->a_flags = (sa->flags & TR_ACTOR_TRAP_EXIT) ? F_TRAP : 0;
    a->a_id = tra_table_alloc(a);
    sa->id = a->a_id;
    if (sa->opts != NULL && sa->opts->parent != NULL) {
        // Linked before anyone else can reach it, so it cannot stop unlinked.
        tra_actor *p = sa->opts->parent->t_a;
        tr_actor_addr me = addr_of(a), parent = addr_of(p);
        lock(a);
        add_link(a, &parent);
        unlock(a);
        lock(p);
        add_link(p, &me);
        unlock(p);
    }
    tr_actor self = {a, NULL, sa->rt, NULL, false};
    sa->err = TR_OK;
    if (sa->spec->init != NULL) {
        sa->err = sa->spec->init(&self, a->a_user, sa->arg);
        if (sa->err != TR_OK) {
            // It stops at its first poll, with init's error as the reason
            // (links and monitors init made are told); stopped does not run.
            a->a_flags |= F_STOPPING | F_INITFAIL;
            a->a_reason = (uint8_t)sa->err;
        }
    }
}

tr_err
tr_actor_spawn(tr_rt *rt, const tr_actor_spec *spec, void *arg, const tr_actor_opts *opts,
               tr_actor_addr *addr)
{
    if (rt == NULL || spec == NULL || spec->receive == NULL || spec->size > MAX_USER_STATE) {
        return TR_EINVAL;
    }
    if (opts != NULL && opts->name != NULL && !name_valid(opts->name)) {
        return TR_EINVAL;
    }
    if (opts != NULL && opts->name != NULL && tr_actor_whereis(rt, opts->name, NULL) == TR_OK) {
        return TR_EEXIST;
    }
    pthread_once(&g_specs_once, specs_init);
    struct spawn_arg sa = {spec, arg,   opts, spec->flags | (opts != NULL ? opts->flags : 0),
                           rt,   TR_OK, 0};
    tr_err err = (sa.flags & TR_ACTOR_LOCAL ? tr_spawn_local : tr_spawn)(
        rt, &g_specs[(spec->size + 15) / 16], spawn_init, &sa, NULL);
    if (err != TR_OK) {
        // TR_ECANCELED: the start was refused after init ran, and the drop
        // has finished the actor.
        return err == TR_ECANCELED ? TR_ESHUTDOWN : err;
    }
    if (sa.err != TR_OK) {
        return sa.err; // it stops at its first poll
    }
    tr_actor_addr me = {0, sa.id};
    if (opts != NULL && opts->name != NULL) {
        err = tr_actor_register(rt, opts->name, me);
        if (err != TR_OK) {
            tr_actor_stop_other(me, err, "name taken");
            return err;
        }
    }
    if (addr != NULL) {
        *addr = me;
    }
    return TR_OK;
}

tr_actor_addr
tr_actor_self(const tr_actor *self)
{
    return addr_of(self->t_a);
}

tr_rt *
tr_actor_rt(const tr_actor *self)
{
    return self->t_rt != NULL ? self->t_rt : tr_cx_rt(self->t_cx);
}

tr_err
tr_actor_stop_other(tr_actor_addr addr, tr_err reason, const char *text)
{
    Troupe__V1__Stop *s;
    tr_msg *m = tr_msg_new(&troupe__v1__stop__descriptor, 64, (void **)&s);
    s->reason = new_reason(m, reason, text);
    tra_msg_of(m)->am_kind = TRA_K_STOP;
    tr_err err = deliver(addr, m, LANE_SYSTEM);
    if (err != TR_OK) {
        tr_msg_free(m);
    }
    return err;
}

bool
tr_actor_alive(tr_actor_addr addr)
{
    if (addr.node != 0) {
        return false;
    }
    void *ptr;
    tra_entry *e = tra_table_acquire(addr.actor, &ptr);
    if (e == NULL) {
        return false;
    }
    bool actor = ((uintptr_t)ptr & 1) == 0;
    if (tra_table_release(e)) {
        finalise(ptr);
    }
    return actor;
}

void
tr_actor_keep(tr_actor *self, tr_msg *m)
{
    if (self->t_cur == m) {
        self->t_cur = NULL;
    }
}

// ---------------------------------------------------------------------------
// Sending.

static tr_err
send_as(tr_actor *self, tr_actor_addr to, tr_msg *m, int kind, int lane)
{
    if (!tra_msg_valid(m)) {
        return TR_EINVAL;
    }
    tra_msg *am = tra_msg_of(m);
    am->am_kind = (uint32_t)kind;
    am->am_from = self != NULL ? addr_of(self->t_a) : TR_ACTOR_NONE;
    if (tr_actor_addr_is_none(am->am_reply)) {
        am->am_reply = am->am_from; // unless tr_msg_set_reply_to said otherwise
    }
    tr_err err = deliver(to, m, lane);
    if (err == TR_OK && self != NULL && self->t_cur == m) {
        self->t_cur = NULL;
    }
    return err;
}

tr_err
tr_actor_send(tr_actor *self, tr_actor_addr to, tr_msg *m)
{
    if (!tra_msg_valid(m)) {
        return TR_EINVAL;
    }
    tra_msg_of(m)->am_corr = 0;
    return send_as(self, to, m, TRA_K_USER, LANE_TRY);
}

enum { OP_IDLE = 0, OP_CALLING = 2 };

// request_lane: a request passes a local bounded mailbox's bound (the
// caller waits for the reply instead), but to another node it takes the
// user lane, whose full link buffer refuses it (TR_EAGAIN): the forced lane
// would drop it there, and the caller would wait for a reply that cannot
// come.
static inline int
request_lane(tr_actor_addr to)
{
    return to.node != 0 ? LANE_TRY : LANE_FORCE;
}

tr_poll
tr_actor_send_wait(tr_actor_addr to, tr_cx *cx, tr_actor_op *op, tr_msg *m, tr_err *err)
{
    (void)op;
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    if (!tra_msg_valid(m)) {
        *err = TR_EINVAL;
        return TR_READY;
    }
    tra_msg *am = tra_msg_of(m);
    am->am_kind = TRA_K_USER;
    am->am_corr = 0;
    tr_err e = deliver(to, m, LANE_TRY);
    if (e != TR_EAGAIN || to.node != 0) {
        // A remote link's full buffer is not waited for: TR_EAGAIN.
        *err = e;
        return TR_READY;
    }
    struct wait_arg wa = {tr_cx_waker(cx)};
    e = with_actor(to, true, add_waiter, &wa);
    if (e != TR_OK) {
        *err = e;
        return TR_READY;
    }
    // Registered: try once more, in case room was made before the
    // registration was seen (wake_waiters' side of the pair).
    e = deliver(to, m, LANE_TRY);
    if (e != TR_EAGAIN) {
        *err = e;
        return TR_READY;
    }
    return TR_PENDING;
}

static void
call_cleanup(tr_actor_op *op)
{
    endpoint *ep = op->ao_endpoint;
    if (ep == NULL) {
        return;
    }
    tr_timer_abandon(&op->ao_timer);
    call_unwatch(op->ao_to, op->ao_ref);
    endpoint_close(ep);
    op->ao_endpoint = NULL;
    op->ao_ref = 0;
    op->ao_to = TR_ACTOR_NONE;
    op->ao_state = OP_IDLE;
}

tr_poll
tr_actor_call(tr_actor_addr to, tr_cx *cx, tr_actor_op *op, tr_msg *m, uint64_t timeout_ns,
              tr_msg **reply, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    endpoint *ep = op->ao_endpoint;
    if (op->ao_state == OP_IDLE) {
        *reply = NULL;
        if (!tra_msg_valid(m)) {
            *err = TR_EINVAL;
            return TR_READY;
        }
        ep = endpoint_new(cx);
        ep->ep_corr = fresh_ref();
        op->ao_endpoint = ep;
        op->ao_to = to;
        op->ao_state = OP_CALLING;
        tr_actor_addr me = {0, ep->ep_id};
        ep->ep_ref = fresh_ref();
        op->ao_ref = ep->ep_ref;
        tr_err e = call_watch(me, to, ep->ep_ref);
        (void)e; // a callee that is gone: its Down is in the endpoint already
        tra_msg *am = tra_msg_of(m);
        am->am_from = TR_ACTOR_NONE;
        am->am_reply = me;
        am->am_corr = ep->ep_corr;
        am->am_kind = TRA_K_USER;
        e = deliver(to, m, request_lane(to));
        if (e != TR_OK) {
            tr_msg_free(m);
            call_cleanup(op);
            *err = e;
            return TR_READY;
        }
        if (timeout_ns != 0) {
            op->ao_pad = 1;
        }
    }
    tr_msg *r = atomic_load_explicit(&ep->ep_msg, memory_order_acquire);
    if (r == NULL) {
        if (op->ao_pad == 1 && tr_sleep(&op->ao_timer, cx, timeout_ns) == TR_READY) {
            op->ao_pad = 0;
            call_cleanup(op);
            *err = TR_ETIMEDOUT;
            return TR_READY;
        }
        return TR_PENDING;
    }
    // Take the message out of the endpoint so its end does not free it.
    atomic_store_explicit(&ep->ep_msg, NULL, memory_order_relaxed);
    op->ao_pad = 0;
    tra_msg *ar = tra_msg_of(r);
    if (ar->am_kind == TRA_K_REPLY && tr_msg_is(r, &troupe__v1__call_failed__descriptor)) {
        tr_err why = tr_msg_reason_err(((Troupe__V1__CallFailed *)ar->am_body)->reason);
        *err = why == TR_OK ? TR_ECLOSED : why;
        tr_msg_free(r);
    } else if (ar->am_kind == TRA_K_REPLY && tr_msg_is(r, &troupe__v1__node_error__descriptor)) {
        // The callee's node could not deliver the request.
        tr_err why = (tr_err)((Troupe__V1__NodeError *)ar->am_body)->code;
        *err = why == TR_OK ? TR_EIO : why;
        tr_msg_free(r);
    } else if (ar->am_kind == TRA_K_REPLY) {
        *reply = r;
        *err = TR_OK;
    } else {
        Troupe__V1__Down *d = ar->am_body;
        tr_err why = tr_msg_reason_err(d->reason);
        *err = why == TR_OK ? TR_ECLOSED : why;
        tr_msg_free(r);
    }
    call_cleanup(op);
    return TR_READY;
}

void
tr_actor_op_abandon(tr_actor_op *op)
{
    if (op == NULL) {
        return;
    }
    call_cleanup(op);
    op->ao_pad = 0;
}

tr_err
tr_actor_request(tr_actor *self, tr_actor_addr to, tr_msg *m, uint64_t timeout_ns, uint64_t *corr)
{
    if (!tra_msg_valid(m)) {
        return TR_EINVAL;
    }
    tra_actor *a = self->t_a;
    tr_actor_addr me = addr_of(a);
    uint64_t ref;
    // A callee that is gone gives a Down at once; refuse instead.
    if (to.node == 0 && !tr_actor_alive(to)) {
        return TR_ENOTFOUND;
    }
    ref = fresh_ref();
    call_watch(me, to, ref);
    request rq = {fresh_ref(), ref, to, TR_JOIN_NONE};
    tra_msg *am = tra_msg_of(m);
    am->am_corr = rq.rq_corr;
    am->am_reply = me;
    tr_err err = send_as(self, to, m, TRA_K_USER, request_lane(to));
    if (err != TR_OK) {
        call_unwatch(to, ref);
        return err;
    }
    if (timeout_ns != 0) {
        timer_task init = {
            .tt_ns = timeout_ns, .tt_corr = rq.rq_corr, .tt_self = me, .tt_callee = to};
        tr_spawn(tr_actor_rt(self), &timer_spec, NULL, &init, &rq.rq_timer);
    }
    tra_ext *x = ext_get(a);
    grow((void **)&x->x_req, &x->x_capreq, x->x_nreq + 1, sizeof(request));
    x->x_req[x->x_nreq++] = rq;
    if (corr != NULL) {
        *corr = rq.rq_corr;
    }
    return TR_OK;
}

tr_err
tr_actor_reply(tr_actor *self, const tr_msg *req, tr_msg *reply)
{
    if (!tra_msg_valid(reply)) {
        return TR_EINVAL;
    }
    if (!tra_msg_valid(req)) {
        tr_msg_free(reply);
        return TR_EINVAL;
    }
    const tra_msg *rq = (const tra_msg *)(const void *)req;
    if (self != NULL && self->t_cur == req) {
        self->t_replied = true;
    }
    tra_msg *am = tra_msg_of(reply);
    am->am_corr = rq->am_corr;
    tr_actor_addr to = rq->am_reply;
    am->am_kind = TRA_K_REPLY;
    am->am_from = self != NULL ? addr_of(self->t_a) : TR_ACTOR_NONE;
    am->am_reply = am->am_from;
    tr_err err = deliver(to, reply, LANE_FORCE);
    if (err != TR_OK) {
        tr_msg_free(reply);
    }
    return err;
}

tr_err
tr_actor_forward(tr_actor *self, tr_actor_addr to, tr_msg *m)
{
    if (!tra_msg_valid(m)) {
        return TR_EINVAL;
    }
    tr_err err = deliver(to, m, LANE_TRY);
    if (err == TR_OK && self != NULL && self->t_cur == m) {
        self->t_cur = NULL;
    }
    return err;
}

// ---------------------------------------------------------------------------
// Monitors and links.

tr_err
tra_deliver(tr_actor_addr to, tr_msg *m, int lane)
{
    return deliver(to, m, lane);
}

tr_msg *
tra_new_exit(tr_actor_addr from, tr_err reason, const char *text)
{
    return new_exit(from, reason, text);
}

tr_msg *
tra_new_down(tr_actor_addr from, uint64_t ref, tr_err reason, const char *text)
{
    return new_down(from, ref, reason, text);
}

tr_err
tra_monitor_ref(tr_actor_addr watcher, tr_actor_addr target, uint64_t ref)
{
    return monitor_ref(watcher, target, ref);
}

static tr_err
monitor_ref(tr_actor_addr watcher, tr_actor_addr target, uint64_t ref)
{
    struct mon_arg ma = {{ref, watcher}};
    if (target.node != 0 && tra_node_watch(watcher, target, ref, true) == TR_OK) {
        return TR_OK;
    }
    if (with_actor(target, true, add_monitor, &ma) == TR_OK) {
        return TR_OK;
    }
    tr_msg *d = new_down(target, ma.mo.mo_ref, TR_ENOTFOUND, "no such actor");
    tr_err err = deliver(watcher, d, LANE_FORCE);
    if (err != TR_OK) {
        tr_msg_free(d);
    }
    return err;
}

tr_err
tr_actor_monitor(tr_actor_addr watcher, tr_actor_addr target, uint64_t *ref)
{
    uint64_t r = fresh_ref();
    if (ref != NULL) {
        *ref = r;
    }
    return monitor_ref(watcher, target, r);
}

void
tr_actor_demonitor(tr_actor_addr target, uint64_t ref)
{
    if (target.node != 0) {
        tra_node_unwatch(target, ref, true);
        return;
    }
    with_actor(target, true, del_monitor, &ref);
}

tr_err
tr_actor_link(tr_actor *self, tr_actor_addr other)
{
    tr_actor_addr me = addr_of(self->t_a);
    if (tr_actor_addr_eq(me, other)) {
        return TR_EINVAL;
    }
    tr_err found =
        other.node != 0 ? tra_node_link(me, other) : with_actor(other, true, add_link, &me);
    if (found != TR_OK) {
        tr_msg *e = new_exit(other, TR_ENOTFOUND, "no such actor");
        if (deliver(me, e, LANE_FORCE) != TR_OK) {
            tr_msg_free(e);
        }
        return TR_OK;
    }
    lock(self->t_a);
    add_link(self->t_a, &other);
    unlock(self->t_a);
    return TR_OK;
}

void
tr_actor_unlink(tr_actor *self, tr_actor_addr other)
{
    tr_actor_addr me = addr_of(self->t_a);
    if (other.node != 0) {
        tra_node_unlink(me, other);
    } else {
        with_actor(other, true, del_link, &me);
    }
    lock(self->t_a);
    del_link(self->t_a, &other);
    unlock(self->t_a);
}

// ---------------------------------------------------------------------------
// Other layers of actors/.

struct state_arg {
    const tr_actor_spec *spec;
    void (*fn)(void *state, void *arg);
    void *arg;
    bool ran;
};

static void
state_on_actor(tra_actor *a, void *arg)
{
    struct state_arg *sa = arg;
    if (a->a_spec == sa->spec) {
        sa->fn(a->a_user, sa->arg);
        sa->ran = true;
    }
}

tr_err
tra_with_state(tr_actor_addr addr, const tr_actor_spec *spec, void (*fn)(void *state, void *arg),
               void *arg)
{
    struct state_arg sa = {spec, fn, arg, false};
    tr_err err = with_actor(addr, false, state_on_actor, &sa);
    return (err == TR_OK && !sa.ran) ? TR_ENOTFOUND : err;
}

tr_err
tra_remote_link(tr_actor_addr local, tr_actor_addr remote, bool link)
{
    if (!link) {
        with_actor(local, true, del_link, &remote);
        return TR_OK;
    }
    if (with_actor(local, true, add_link, &remote) == TR_OK) {
        return TR_OK;
    }
    tr_msg *e = new_exit(local, TR_ENOTFOUND, "no such actor");
    if (deliver(remote, e, LANE_FORCE) != TR_OK) {
        tr_msg_free(e);
    }
    return TR_ENOTFOUND;
}

// Design notes.
//
// A supervisor is an actor that traps exits and is linked to each child it
// starts (the link is made as part of the spawn, so a child cannot stop
// unnoticed). An Exit from a current child is a stop to act on; an Exit
// from an address that is no longer a current child (a child the
// supervisor itself stopped for a restart, whose exit arrives later) is
// ignored. The strategies are OTP's: one_for_one restarts the child that
// stopped; one_for_all stops every other child and restarts all, in start
// order; rest_for_one does the same for the children started after it.
// Restart intensity: the times of the last `intensity` restarts are kept
// in a ring; one more within period_ms makes the supervisor stop every
// child, last started first, and then itself with TR_EEXHAUSTED, which its
// own supervisor (or a monitor) sees.
//
// Stopping a child is asynchronous (tr_actor_stop_other: it stops before
// its next message); the supervisor does not wait for it to be gone before
// starting the replacement, unlike OTP's shutdown timeout. A registered
// name is taken over by the replacement (the old holder's name is removed
// first), so lookups find the new child at once.
//
// tr_sup_which and tr_sup_restarts read the child table from other threads
// under the supervisor's mutex.
#include <pthread.h>
#include <string.h>

#include "actor_int.h"

typedef struct child {
    char *c_id;
    char *c_name;
    const tr_actor_spec *c_spec;
    void *c_arg;
    tr_sup_restart c_restart;
    tr_actor_addr c_addr; // current incarnation; none when not running
} child;

typedef struct supdata {
    pthread_mutex_t d_lock; // c_addr and d_restarts, for readers on other threads
    tr_sup_strategy d_strategy;
    uint32_t d_intensity, d_period_ms;
    child *d_children;
    size_t d_n;
    uint64_t *d_times; // ring of the last d_intensity restart times (ns)
    size_t d_ntimes, d_head;
    uint64_t d_restarts;
    tr_actor_addr d_parent;
} supdata;

typedef struct sup_state {
    supdata *s_d;
} sup_state;

typedef struct sup_arg {
    const tr_sup_spec *spec;
    const tr_actor_opts *opts;
} sup_arg;

static void
data_free(supdata *d)
{
    for (size_t i = 0; i < d->d_n; i++) {
        free(d->d_children[i].c_id);
        free(d->d_children[i].c_name);
    }
    free(d->d_children);
    free(d->d_times);
    pthread_mutex_destroy(&d->d_lock);
    free(d);
}

// start_child starts child i, linked to the supervisor.
static tr_err
start_child(tr_actor *self, supdata *d, size_t i)
{
    child *c = &d->d_children[i];
    tr_rt *rt = tr_actor_rt(self);
    if (c->c_name != NULL) {
        // The name of an old incarnation that has not quite stopped yet.
        tr_actor_unregister(rt, c->c_name);
    }
    tr_actor_opts o = {.parent = self, .name = c->c_name};
    tr_actor_addr a = TR_ACTOR_NONE;
    tr_err err = tr_actor_spawn(rt, c->c_spec, c->c_arg, &o, &a);
    pthread_mutex_lock(&d->d_lock);
    c->c_addr = err == TR_OK ? a : TR_ACTOR_NONE;
    pthread_mutex_unlock(&d->d_lock);
    return err;
}

// stop_child stops child i if it runs (its Exit is then ignored).
static void
stop_child(tr_actor *self, supdata *d, size_t i)
{
    child *c = &d->d_children[i];
    if (tr_actor_addr_is_none(c->c_addr)) {
        return;
    }
    tr_actor_addr a = c->c_addr;
    pthread_mutex_lock(&d->d_lock);
    c->c_addr = TR_ACTOR_NONE;
    pthread_mutex_unlock(&d->d_lock);
    tr_actor_unlink(self, a);
    tr_actor_stop_other(a, TR_ESHUTDOWN, "stopped by its supervisor");
}

static void
stop_all(tr_actor *self, supdata *d)
{
    for (size_t i = d->d_n; i-- > 0;) {
        stop_child(self, d, i);
    }
}

static tr_err
sup_init(tr_actor *self, void *state, void *argp)
{
    sup_arg *sa = argp;
    const tr_sup_spec *spec = sa->spec;
    supdata *d = tra_zalloc(sizeof *d);
    pthread_mutex_init(&d->d_lock, NULL);
    d->d_strategy = spec->strategy;
    d->d_intensity = spec->intensity;
    d->d_period_ms = spec->period_ms;
    d->d_n = spec->nchildren;
    d->d_children = tra_zalloc((spec->nchildren + 1) * sizeof(child));
    d->d_times = tra_zalloc(((size_t)spec->intensity + 1) * sizeof(uint64_t));
    for (size_t i = 0; i < spec->nchildren; i++) {
        const tr_sup_child *in = &spec->children[i];
        child *c = &d->d_children[i];
        c->c_id = tra_strdup(in->id);
        c->c_name = tra_strdup(in->name);
        c->c_spec = in->spec;
        c->c_arg = in->arg;
        c->c_restart = in->restart;
    }
    if (sa->opts != NULL && sa->opts->parent != NULL) {
        d->d_parent = tr_actor_self(sa->opts->parent);
    }
    ((sup_state *)state)->s_d = d;
    for (size_t i = 0; i < d->d_n; i++) {
        tr_err err = start_child(self, d, i);
        if (err != TR_OK) {
            // The supervisor stops at its first poll with err, and its
            // `stopped` does not run after a failed init: stop the children
            // started so far here.
            stop_all(self, d);
            data_free(d);
            ((sup_state *)state)->s_d = NULL;
            return err;
        }
    }
    return TR_OK;
}

// intensity_spent records a restart at now and reports whether it is one
// too many within the period.
static bool
intensity_spent(supdata *d, uint64_t now)
{
    if (d->d_intensity == 0) {
        return true;
    }
    uint64_t period = (uint64_t)d->d_period_ms * 1000000u;
    // The oldest of the last `intensity` restarts: if it is inside the
    // window, this one makes intensity + 1.
    if (d->d_ntimes == d->d_intensity) {
        uint64_t oldest = d->d_times[d->d_head];
        if (now - oldest <= period) {
            return true;
        }
    }
    d->d_times[d->d_head] = now;
    d->d_head = (d->d_head + 1) % d->d_intensity;
    if (d->d_ntimes < d->d_intensity) {
        d->d_ntimes++;
    }
    return false;
}

static void
sup_receive(tr_actor *self, void *state, tr_msg *m)
{
    supdata *d = ((sup_state *)state)->s_d;
    if (!tr_msg_is(m, &troupe__v1__exit__descriptor)) {
        return; // a supervisor takes no user messages
    }
    const Troupe__V1__Exit *x = tr_msg_body(m);
    tr_actor_addr from = {x->from->node, x->from->actor};
    tr_err why = tr_msg_reason_err(x->reason);
    if (!tr_actor_addr_is_none(d->d_parent) && tr_actor_addr_eq(from, d->d_parent)) {
        if (why != TR_OK) {
            tr_actor_stop(self, why, tr_msg_reason_text(x->reason));
        }
        return;
    }
    size_t i;
    for (i = 0; i < d->d_n; i++) {
        if (tr_actor_addr_eq(d->d_children[i].c_addr, from)) {
            break;
        }
    }
    if (i == d->d_n) {
        return; // an incarnation stopped on purpose, or not a child
    }
    child *c = &d->d_children[i];
    pthread_mutex_lock(&d->d_lock);
    c->c_addr = TR_ACTOR_NONE;
    pthread_mutex_unlock(&d->d_lock);
    bool restart = c->c_restart == TR_RESTART_PERMANENT ||
                   (c->c_restart == TR_RESTART_TRANSIENT && why != TR_OK);
    if (!restart) {
        return;
    }
    if (intensity_spent(d, tr_now(tr_actor_rt(self)))) {
        stop_all(self, d);
        tr_actor_stop(self, TR_EEXHAUSTED, "restart intensity reached");
        return;
    }
    size_t first = i;
    if (d->d_strategy == TR_SUP_ONE_FOR_ALL) {
        first = 0;
    }
    if (d->d_strategy != TR_SUP_ONE_FOR_ONE) {
        for (size_t k = d->d_n; k-- > first;) {
            if (k != i) {
                stop_child(self, d, k);
            }
        }
    }
    size_t last = d->d_strategy == TR_SUP_ONE_FOR_ONE ? i + 1 : d->d_n;
    for (size_t k = first; k < last; k++) {
        child *ck = &d->d_children[k];
        if (k != i && ck->c_restart == TR_RESTART_TEMPORARY) {
            continue; // a temporary child stopped with its siblings stays stopped
        }
        tr_err err = start_child(self, d, k);
        if (err != TR_OK) {
            stop_all(self, d);
            tr_actor_stop(self, err, "a child failed to restart");
            return;
        }
    }
    pthread_mutex_lock(&d->d_lock);
    d->d_restarts++;
    pthread_mutex_unlock(&d->d_lock);
}

static void
sup_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)reason;
    supdata *d = ((sup_state *)state)->s_d;
    if (d == NULL) {
        return;
    }
    stop_all(self, d);
    // Readers on other threads hold the supervisor while they read (its
    // entry is closed by now, so none is left): the data may go.
    data_free(d);
}

static const tr_actor_spec sup_spec = {
    .name = "tr.supervisor",
    .size = sizeof(sup_state),
    .init = sup_init,
    .receive = sup_receive,
    .stopped = sup_stopped,
    .flags = TR_ACTOR_TRAP_EXIT,
};

tr_err
tr_sup_start(tr_rt *rt, const tr_sup_spec *spec, const tr_actor_opts *opts, tr_actor_addr *addr)
{
    if (rt == NULL || spec == NULL || (spec->nchildren > 0 && spec->children == NULL) ||
        spec->strategy > TR_SUP_REST_FOR_ONE || (spec->intensity > 0 && spec->period_ms == 0)) {
        return TR_EINVAL;
    }
    for (size_t i = 0; i < spec->nchildren; i++) {
        const tr_sup_child *c = &spec->children[i];
        if (c->id == NULL || c->spec == NULL || c->restart > TR_RESTART_TEMPORARY) {
            return TR_EINVAL;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(spec->children[k].id, c->id) == 0) {
                return TR_EINVAL; // ids are unique
            }
        }
    }
    sup_arg sa = {spec, opts};
    return tr_actor_spawn(rt, &sup_spec, &sa, opts, addr);
}

struct which_arg {
    const char *id;
    tr_actor_addr addr;
    uint64_t restarts;
    bool found;
};

static void
which_on(void *state, void *argp)
{
    struct which_arg *wa = argp;
    supdata *d = ((sup_state *)state)->s_d;
    if (d == NULL) {
        return;
    }
    pthread_mutex_lock(&d->d_lock);
    wa->restarts = d->d_restarts;
    if (wa->id != NULL) {
        for (size_t i = 0; i < d->d_n; i++) {
            if (strcmp(d->d_children[i].c_id, wa->id) == 0) {
                wa->addr = d->d_children[i].c_addr;
                wa->found = !tr_actor_addr_is_none(wa->addr);
                break;
            }
        }
    }
    pthread_mutex_unlock(&d->d_lock);
}

tr_err
tr_sup_which(tr_actor_addr sup, const char *id, tr_actor_addr *child_addr)
{
    if (id == NULL) {
        return TR_EINVAL;
    }
    struct which_arg wa = {id, TR_ACTOR_NONE, 0, false};
    tr_err err = tra_with_state(sup, &sup_spec, which_on, &wa);
    if (err != TR_OK || !wa.found) {
        return TR_ENOTFOUND;
    }
    if (child_addr != NULL) {
        *child_addr = wa.addr;
    }
    return TR_OK;
}

uint64_t
tr_sup_restarts(tr_actor_addr sup)
{
    struct which_arg wa = {NULL, TR_ACTOR_NONE, 0, false};
    tra_with_state(sup, &sup_spec, which_on, &wa);
    return wa.restarts;
}

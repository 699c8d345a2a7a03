// placement.c: the workers a job may run on (placement.h).
#include "placement.h"

#include <stdlib.h>
#include <string.h>

struct trd_worker {
    const trd_worker_ops *w_ops;
    void *w_impl;
    char *w_name;
    uint32_t w_slots; // 0: no limit of its own
    uint32_t w_used;
    trd_worker *w_next;
};

struct trd_placement {
    trd_worker *p_head, *p_tail;
};

static void *
xzalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        abort();
    }
    return p;
}

trd_placement *
trd_placement_new(void)
{
    return xzalloc(sizeof(trd_placement));
}

void
trd_placement_free(trd_placement *p)
{
    if (p == NULL) {
        return;
    }
    trd_worker *w = p->p_head;
    while (w != NULL) {
        trd_worker *next = w->w_next;
        if (w->w_ops->free != NULL) {
            w->w_ops->free(w->w_impl);
        }
        free(w->w_name);
        free(w);
        w = next;
    }
    free(p);
}

trd_worker *
trd_placement_add(trd_placement *p, const trd_worker_ops *ops, void *impl, const char *name,
                  uint32_t slots)
{
    trd_worker *w = xzalloc(sizeof *w);
    w->w_ops = ops;
    w->w_impl = impl;
    w->w_name = strdup(name != NULL ? name : "");
    if (w->w_name == NULL) {
        abort();
    }
    w->w_slots = slots;
    if (p->p_tail != NULL) {
        p->p_tail->w_next = w;
    } else {
        p->p_head = w;
    }
    p->p_tail = w;
    return w;
}

// want: the slots a job of n takes on w (at least 1, at most all of it).
static uint32_t
want(const trd_worker *w, uint32_t n)
{
    n = n != 0 ? n : 1;
    return w->w_slots != 0 && n > w->w_slots ? w->w_slots : n;
}

static bool
has_room(const trd_worker *w, uint32_t n)
{
    return w->w_slots == 0 || want(w, n) <= w->w_slots - w->w_used;
}

// find: the first worker with room for slots, or NULL.
static trd_worker *
find(const trd_placement *p, uint32_t slots)
{
    trd_worker *w = p->p_head;
    while (w != NULL && !has_room(w, slots)) {
        w = w->w_next;
    }
    return w;
}

trd_worker *
trd_place(trd_placement *p, uint32_t slots, uint32_t *taken)
{
    trd_worker *w = find(p, slots);
    *taken = w != NULL ? want(w, slots) : 0;
    if (w != NULL) {
        w->w_used += *taken;
    }
    return w;
}

bool
trd_placement_room(const trd_placement *p, uint32_t slots)
{
    return find(p, slots) != NULL;
}

void
trd_unplace(trd_worker *w, uint32_t taken)
{
    w->w_used = w->w_used >= taken ? w->w_used - taken : 0;
}

tr_err
trd_worker_start(trd_worker *w, const tr_proc_opts *o, tr_actor_addr owner, tr_actor_addr *proc)
{
    return w->w_ops->start(w->w_impl, o, owner, proc);
}

const char *
trd_worker_name(const trd_worker *w)
{
    return w->w_name;
}

uint32_t
trd_worker_used(const trd_worker *w)
{
    return w->w_used;
}

// ---------------------------------------------------------------------------
// The local worker: trouped's own runtime.

typedef struct local {
    tr_rt *l_rt;
    char *l_cgroup; // NULL: none
} local;

static tr_err
local_start(void *impl, const tr_proc_opts *o, tr_actor_addr owner, tr_actor_addr *proc)
{
    const local *l = impl;
    tr_proc_opts lo = *o;
    lo.cgroup_parent = l->l_cgroup;
    lo.cgroup_reuse = l->l_cgroup != NULL;
    return tr_proc_actor_start(l->l_rt, &lo, owner, proc);
}

static void
local_free(void *impl)
{
    local *l = impl;
    free(l->l_cgroup);
    free(l);
}

static const trd_worker_ops local_ops = {.start = local_start, .free = local_free};

trd_worker *
trd_placement_add_local(trd_placement *p, tr_rt *rt, const char *cgroup_parent)
{
    local *l = xzalloc(sizeof *l);
    l->l_rt = rt;
    if (cgroup_parent != NULL && cgroup_parent[0] != '\0' &&
        (l->l_cgroup = strdup(cgroup_parent)) == NULL) {
        abort();
    }
    return trd_placement_add(p, &local_ops, l, "local", 0);
}

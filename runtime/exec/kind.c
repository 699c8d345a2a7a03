// kind.c: the registry of task kinds (troupe/executor.h), by which a Spawn
// from another process names the task it wants: a short name, a static
// spec, a function that fills in a new task's state from packed arguments
// and, for kinds whose result may leave the process, a result encoder.
//
// Kinds are few and looked up once per spawn by name (never on a poll), so
// the registry is an array of pointers to records under a small mutex: a
// record never moves and lives as long as the runtime, so a lookup hands out
// the record itself.
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"

static bool
name_ok(const char *name, size_t len)
{
    if (len == 0 || len > TR_KIND_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == ':' || ch == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

static const tr__kind *
find_locked(tr_rt *rt, const char *name, size_t len)
{
    for (unsigned i = 0; i < rt->r_nkinds; i++) {
        const tr__kind *k = rt->r_kinds[i];
        if (strlen(k->k_name) == len && memcmp(k->k_name, name, len) == 0) {
            return k;
        }
    }
    return NULL;
}

tr_err
tr_kind_register(tr_rt *rt, const char *name, const tr_task_spec *spec,
                 tr_kind_init_fn init_from_args, tr_kind_encode_fn encode_result)
{
    if (rt == NULL || name == NULL) {
        return tr__fail(TR_EINVAL, "tr_kind_register: NULL runtime or name");
    }
    size_t len = strnlen(name, TR_KIND_NAME_MAX + 1);
    if (!name_ok(name, len)) {
        return tr__fail(TR_EINVAL,
                        "tr_kind_register: a kind's name is 1 to %d bytes of [A-Za-z0-9_.:-]",
                        TR_KIND_NAME_MAX);
    }
    if (spec == NULL || spec->poll == NULL || spec->size > TR_TASK_MAX_STATE) {
        return tr__fail(TR_EINVAL, "tr_kind_register: kind '%s': bad spec", name);
    }
    tr__kind *k = tr__zalloc(sizeof(*k));
    memcpy(k->k_name, name, len);
    k->k_spec = spec;
    k->k_init = init_from_args;
    k->k_encode = encode_result;
    tr_err rv = TR_OK;
    tr__mutex_lock(&rt->r_kind_lock);
    if (find_locked(rt, name, len) != NULL) {
        rv = TR_EEXIST;
    } else {
        if (rt->r_nkinds == rt->r_kind_cap) {
            unsigned cap = rt->r_kind_cap ? rt->r_kind_cap * 2 : 8;
            tr__kind **a = tr__alloc(sizeof(*a) * cap);
            if (rt->r_nkinds > 0) {
                memcpy(a, rt->r_kinds, sizeof(*a) * rt->r_nkinds);
                tr__free(rt->r_kinds, sizeof(*a) * rt->r_kind_cap);
            }
            rt->r_kinds = a;
            rt->r_kind_cap = cap;
        }
        rt->r_kinds[rt->r_nkinds++] = k;
    }
    tr__mutex_unlock(&rt->r_kind_lock);
    if (rv != TR_OK) {
        tr__free(k, sizeof(*k));
        return tr__fail(rv, "tr_kind_register: the runtime has a kind '%s' already", name);
    }
    return TR_OK;
}

const tr__kind *
tr__kind_find(tr_rt *rt, const char *name, size_t len)
{
    tr__mutex_lock(&rt->r_kind_lock);
    const tr__kind *k = find_locked(rt, name, len);
    tr__mutex_unlock(&rt->r_kind_lock);
    return k;
}

tr_err
tr__kind_new(tr_rt *rt, const tr__kind *k, const void *args, size_t len, void **state)
{
    static const char none[1];
    if (k->k_init == NULL && len > 0) {
        return tr__fail(TR_EINVAL, "kind '%s' takes no arguments (%zu bytes given)", k->k_name,
                        len);
    }
    void *st;
    tr_err rv = tr_task_new(rt, k->k_spec, &st);
    if (rv != TR_OK) {
        return rv;
    }
    if (k->k_init != NULL) {
        rv = k->k_init(st, args != NULL ? args : none, len);
        if (rv != TR_OK) {
            tr_task_discard(st);
            return rv;
        }
    }
    *state = st;
    return TR_OK;
}

tr_err
tr_kind_spawn(tr_rt *rt, const char *name, const void *args, size_t len, tr_join *join)
{
    if (join != NULL) {
        *join = TR_JOIN_NONE;
    }
    if (rt == NULL || name == NULL || (args == NULL && len > 0)) {
        return tr__fail(TR_EINVAL, "tr_kind_spawn: NULL runtime, name or args");
    }
    size_t n = strnlen(name, TR_KIND_NAME_MAX + 1);
    const tr__kind *k = tr__kind_find(rt, name, n);
    if (k == NULL) {
        return tr__fail(TR_ENOTFOUND, "tr_kind_spawn: no task kind '%.*s'", (int)n, name);
    }
    void *st;
    tr_err rv = tr__kind_new(rt, k, args, len, &st);
    if (rv != TR_OK) {
        return rv;
    }
    return tr_task_start(st, join);
}

void
tr__kinds_free(tr_rt *rt)
{
    for (unsigned i = 0; i < rt->r_nkinds; i++) {
        tr__free(rt->r_kinds[i], sizeof(tr__kind));
    }
    if (rt->r_kinds != NULL) {
        tr__free(rt->r_kinds, sizeof(*rt->r_kinds) * rt->r_kind_cap);
    }
    rt->r_kinds = NULL;
    rt->r_nkinds = rt->r_kind_cap = 0;
}

tr_err
tr_kind_set_remote(tr_rt *rt, const char *name, bool remote)
{
    if (rt == NULL || name == NULL) {
        return TR_EINVAL;
    }
    const tr__kind *k = tr__kind_find(rt, name, strnlen(name, TR_KIND_NAME_MAX + 1));
    if (k == NULL) {
        return TR_ENOTFOUND;
    }
    if (remote && k->k_encode == NULL) {
        return tr__fail(TR_EINVAL,
                        "tr_kind_set_remote: kind '%s' has no result encoder: it cannot be "
                        "spawned from another process",
                        name);
    }
    // Relaxed: a flag read on its own; the record itself was published by
    // the registry's mutex.
    atomic_store_explicit(&((tr__kind *)k)->k_remote, remote, memory_order_relaxed);
    return TR_OK;
}

bool
tr_kind_is_remote(tr_rt *rt, const char *name)
{
    if (rt == NULL || name == NULL) {
        return false;
    }
    const tr__kind *k = tr__kind_find(rt, name, strnlen(name, TR_KIND_NAME_MAX + 1));
    return k != NULL && atomic_load_explicit(&k->k_remote, memory_order_relaxed);
}

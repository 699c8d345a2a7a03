// Design notes.
//
// What the schedulers share: the table that names them, the generator that
// picks steal victims and orders, and the stealing half of ws and hybrid
// (a tr__steal_q at the start of their per-worker state: a thief takes
// half of a victim's ring in one batch, ring.c). The worker loop in exec/
// calls a scheduler through its ops; a scheduler never parks, counts polls
// or looks at shutdown.
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "sched/sched.h"

const tr__sched_entry tr__sched_table[] = {
    {TR_SCHED_WS, "ws", &tr__sched_ws},
    {TR_SCHED_RR, "rr", &tr__sched_rr},
    {TR_SCHED_HYBRID, "hybrid", &tr__sched_hybrid},
};
const size_t tr__sched_count = sizeof(tr__sched_table) / sizeof(tr__sched_table[0]);

const tr__sched_entry *
tr__sched_find(tr_sched_kind kind)
{
    for (size_t i = 0; i < tr__sched_count; i++) {
        if (tr__sched_table[i].kind == kind) {
            return &tr__sched_table[i];
        }
    }
    return NULL;
}

static const char *
sched_name_at(size_t i)
{
    return tr__sched_table[i].name;
}

void
tr__sched_names(char *buf, size_t len)
{
    tr__name_list(buf, len, tr__sched_count, sched_name_at);
}

const char *
tr_sched_name(tr_sched_kind k)
{
    const tr__sched_entry *e = tr__sched_find(k);
    return e != NULL ? e->name : "?";
}

tr_err
tr_sched_parse(const char *name, tr_sched_kind *out)
{
    if (name == NULL || out == NULL) {
        return tr__fail(TR_EINVAL, "tr_sched_parse: %s is NULL", name == NULL ? "name" : "out");
    }
    for (size_t i = 0; i < tr__sched_count; i++) {
        if (strcmp(name, tr__sched_table[i].name) == 0) {
            *out = tr__sched_table[i].kind;
            return TR_OK;
        }
    }
    char names[64];
    tr__sched_names(names, sizeof(names));
    return tr__fail(TR_EINVAL, "scheduler \"%.64s\": not a scheduler (%s)", name, names);
}

uint64_t
tr__rng_next(uint64_t *state)
{
    // xorshift64*: small, fast, and good enough to pick victims and orders.
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void
tr__steal_q_init(tr__worker *w, tr__steal_q *q)
{
    tr__ring_init(&q->sq_ring);
    q->sq_rng = 0x9E3779B97F4A7C15ull * (tr__worker_index(w) + 1);
}

bool
tr__steal_q_push_quiet(tr__worker *w, tr__steal_q *q, tr__slot *s)
{
    tr__slot *batch[TR__RING_CAP / 2 + 1];
    uint32_t n;
    if (!tr__ring_push(&q->sq_ring, s, batch, &n)) {
        tr__inject_push(tr__worker_rt(w), batch, n);
        return false; // tr__inject_push notified
    }
    return true;
}

void
tr__steal_q_push(tr__worker *w, tr__steal_q *q, tr__slot *s)
{
    if (tr__steal_q_push_quiet(w, q, s)) {
        tr__notify_parked(tr__worker_rt(w));
    }
}

tr__slot *
tr__steal_q_steal(tr__worker *w)
{
    tr_rt *rt = tr__worker_rt(w);
    unsigned n = tr__rt_nworkers(rt);
    if (n < 2) {
        return NULL;
    }
    tr__steal_q *q = tr__steal_q_of(tr__worker_sched(w));
    unsigned start = (unsigned)(tr__rng_next(&q->sq_rng) % n);
    for (unsigned i = 0; i < n; i++) {
        tr__worker *v = tr__rt_worker(rt, (start + i) % n);
        if (v == w) {
            continue;
        }
        uint32_t before = tr__ring_len(&q->sq_ring);
        tr__slot *s = tr__ring_steal(&tr__steal_q_of(tr__worker_sched(v))->sq_ring, &q->sq_ring);
        if (s != NULL) {
            tr__worker_count_steal(w, 1 + tr__ring_len(&q->sq_ring) - before);
            return s;
        }
    }
    return NULL;
}

uint32_t
tr__steal_q_stealable(tr__worker *victim)
{
    return tr__ring_len(&tr__steal_q_of(tr__worker_sched(victim))->sq_ring);
}

uint32_t
tr__steal_q_room(tr__worker *w)
{
    return TR__RING_CAP - tr__ring_len(&tr__steal_q_of(tr__worker_sched(w))->sq_ring);
}

void
tr__sched_push_inject(tr_rt *rt, tr__slot *s)
{
    tr__inject_push(rt, &s, 1);
}

void
tr__sched_no_fini(tr__worker *w)
{
    (void)w;
}

uint32_t
tr__sched_unbounded(tr__worker *w)
{
    (void)w;
    return UINT32_MAX;
}

// bench_actor.h: what the actor benchmarks share: their message, a
// Troupe__V1__Address used as two numbers (node and actor: a tag and a
// sequence number, whatever the benchmark says).
#ifndef TR_BENCH_ACTOR_H
#define TR_BENCH_ACTOR_H

#include <troupe/actor.h>

// bench_num_msg returns a new message carrying the numbers node and actor.
// The caller owns it until a send takes it.
static inline tr_msg *
bench_num_msg(uint64_t node, uint64_t actor)
{
    Troupe__V1__Address *b;
    tr_msg *m = tr_msg_new(&troupe__v1__address__descriptor, 0, (void **)&b);
    b->node = node;
    b->actor = actor;
    return m;
}

// bench_num_of returns the numbers of m, or NULL when m carries none.
static inline Troupe__V1__Address *
bench_num_of(tr_msg *m)
{
    return tr_msg_is(m, &troupe__v1__address__descriptor) ? tr_msg_body(m) : NULL;
}

#endif

// ring.h: a worker's bounded run queue that other workers steal from, as
// tokio's local queue: the owner pushes and pops at its own ends without
// locks, thieves take half of it in one batch. Entries are task slots.
#ifndef TR_CORE_RING_H
#define TR_CORE_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base.h"
#include "pool.h"

#define TR__RING_CAP 256u
#define TR__RING_MASK (TR__RING_CAP - 1)

typedef struct tr__ring {
    // {steal, real} heads packed in one word: real is where the owner pops;
    // steal trails it while a thief is copying entries out, so that the
    // owner does not overwrite them. Every change is a CAS.
    _Alignas(64) _Atomic uint64_t r_head;
    // Where the owner pushes. Written only by the owner (release); read by
    // thieves (acquire).
    _Alignas(64) _Atomic uint32_t r_tail;
    // Entries, read by thieves racing the owner's later writes to other
    // positions: relaxed atomics, ordered by r_head and r_tail.
    _Atomic(tr__slot *) r_buf[TR__RING_CAP];
} tr__ring;

void tr__ring_init(tr__ring *r) TR__HIDDEN;

// tr__ring_push appends s (owner only). When the ring is full it returns
// false and hands back in batch[] (room for TR__RING_CAP / 2 + 1) the
// tasks the caller must move to the global injector: the older half of the
// ring plus s when that half could be claimed, otherwise (a thief is
// mid-steal) just s. *batch_len says how many.
bool tr__ring_push(tr__ring *r, tr__slot *s, tr__slot **batch, uint32_t *batch_len) TR__HIDDEN;

// tr__ring_pop takes the oldest entry (owner only), or NULL.
tr__slot *tr__ring_pop(tr__ring *r) TR__HIDDEN;

// tr__ring_steal moves about half of src into dst (dst's owner calls it)
// and returns one of the stolen entries to run now, or NULL.
tr__slot *tr__ring_steal(tr__ring *src, tr__ring *dst) TR__HIDDEN;

// tr__ring_len is a snapshot of how many entries r holds (any thread).
uint32_t tr__ring_len(tr__ring *r) TR__HIDDEN;

// tr__ring_is_empty: owner's or a thief's snapshot.
static inline bool
tr__ring_is_empty(tr__ring *r)
{
    return tr__ring_len(r) == 0;
}

#endif

// frame.h: the records of a node frame, the unit a link carries (node.c's
// notes): one nng message holding one or more records, each
//
//     [8 bytes: destination actor][4 bytes: envelope length][envelope]
//
// little-endian. Header-only and free of state, so that the fuzz harness
// (tests/fuzz/fuzz_frame.c) runs the very decoder a peer's bytes reach.
#ifndef TRA_FRAME_H
#define TRA_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define TRA_REC_HDR 12

typedef enum tra_frame_step {
    TRA_FRAME_END, // nothing left: the frame is done
    TRA_FRAME_REC, // a record: *actor, *env, *len
    TRA_FRAME_BAD, // a cut or garbled record: nothing after it can be found
} tra_frame_step;

// tra_rec_header writes a record's header for actor and an envelope of len
// bytes (at most UINT32_MAX) at p[0, TRA_REC_HDR).
static inline void
tra_rec_header(uint8_t *p, uint64_t actor, size_t len)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(actor >> (8 * i));
    }
    for (int i = 0; i < 4; i++) {
        p[8 + i] = (uint8_t)(len >> (8 * i));
    }
}

// tra_frame_next reads the record at *p (*left bytes remain) and moves
// past it. A frame of no record at all is the caller's to refuse.
static inline tra_frame_step
tra_frame_next(const uint8_t **p, size_t *left, uint64_t *actor, const uint8_t **env, size_t *len)
{
    if (*left == 0) {
        return TRA_FRAME_END;
    }
    if (*left < TRA_REC_HDR) {
        return TRA_FRAME_BAD;
    }
    const uint8_t *q = *p;
    uint64_t a = 0;
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        a |= (uint64_t)q[i] << (8 * i);
    }
    for (int i = 0; i < 4; i++) {
        n |= (size_t)q[8 + i] << (8 * i);
    }
    if (n > *left - TRA_REC_HDR) {
        return TRA_FRAME_BAD;
    }
    *actor = a;
    *env = q + TRA_REC_HDR;
    *len = n;
    *p = q + TRA_REC_HDR + n;
    *left -= TRA_REC_HDR + n;
    return TRA_FRAME_REC;
}

#endif

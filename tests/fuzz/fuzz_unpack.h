// fuzz_unpack.h: what the harnesses of the envelope decoder share
// (fuzz_envelope.c, fuzz_frame.c): the test types registered once (a
// recursive one among them, for the depth limit), and the check that an
// input left nothing of the global unpack cap in flight.
#ifndef TR_FUZZ_UNPACK_H
#define TR_FUZZ_UNPACK_H

#include <stdio.h>
#include <stdlib.h>

#include <troupe/envelope.h>

#include "test_types.pb-c.h"

static void
fuzz_register_test_types(void)
{
    static bool ready;
    if (ready) {
        return;
    }
    if (tr_type_register(&trtest__node__descriptor) != TR_OK ||
        tr_type_register(&trtest__sample__descriptor) != TR_OK) {
        abort();
    }
    ready = true;
}

static void
fuzz_check_nothing_in_flight(const char *who)
{
    tr_unpack_stats st;
    tr_unpack_stats_get(&st);
    if (st.in_flight != 0) {
        fprintf(stderr, "%s: %zu bytes left in flight\n", who, (size_t)st.in_flight);
        abort();
    }
}

#endif

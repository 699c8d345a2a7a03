// fuzz_frame.c: a node frame as a peer's bytes reach it (actors/frame.h):
// the records are split off with tra_frame_next and each envelope goes to
// tr_msg_unpack with the test types registered (among them a recursive
// one). Every record must lie inside the input right after its header and
// re-encode to the same header; the records must tile the input up to the
// end or up to a refused (cut, garbled) record; an envelope is refused
// cleanly or decodes; no crash, no leak, nothing left in flight.
//
// Built as fuzz_envelope.c is: a libFuzzer target with clang and
// -DTR_FUZZ=ON, and always a replay driver ctest runs (fuzz.frame).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <troupe/envelope.h>
#include <troupe/v1/actor.pb-c.h>
#include <troupe/v1/node.pb-c.h>

#include "frame.h"
#include "fuzz_unpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_register_test_types();
    const uint8_t *p = data;
    size_t left = size, seen = 0;
    uint64_t actor;
    const uint8_t *env;
    size_t len;
    tra_frame_step st;
    while ((st = tra_frame_next(&p, &left, &actor, &env, &len)) == TRA_FRAME_REC) {
        uint8_t hdr[TRA_REC_HDR];
        tra_rec_header(hdr, actor, len);
        if (env != data + seen + TRA_REC_HDR || len > size - seen - TRA_REC_HDR || p != env + len ||
            memcmp(hdr, data + seen, TRA_REC_HDR) != 0) {
            fprintf(stderr, "fuzz_frame: a record outside its frame\n");
            abort();
        }
        seen += TRA_REC_HDR + len;
        tr_msg *m;
        tr_unpack_info info;
        tr_err rv = tr_msg_unpack(env, len, NULL, &m, &info);
        if (rv == TR_OK) {
            tr_msg_free(m);
        } else if (m != NULL || info.reason == TR_UNPACK_OK) {
            fprintf(stderr, "fuzz_frame: %s without a reason\n", tr_strerror(rv));
            abort();
        }
    }
    if (p != data + seen || left != size - seen || (st == TRA_FRAME_END) != (seen == size)) {
        fprintf(stderr, "fuzz_frame: the records do not tile the frame\n");
        abort();
    }
    fuzz_check_nothing_in_flight("fuzz_frame");
    return 0;
}

#ifndef TR_LIBFUZZER

#include "fuzz_replay.h"

// record appends m (freed) as a record for actor to buf at *at.
static void
record(uint8_t *buf, size_t cap, size_t *at, uint64_t actor, tr_msg *m)
{
    size_t n = tr_msg_packed_size(m);
    if (*at + TRA_REC_HDR + n > cap) {
        abort();
    }
    tra_rec_header(buf + *at, actor, n);
    tr_msg_pack_to(m, buf + *at + TRA_REC_HDR);
    *at += TRA_REC_HDR + n;
    tr_msg_free(m);
}

static tr_msg *
address_msg(uint64_t node, uint64_t actor)
{
    Troupe__V1__Address *a;
    tr_msg *m = tr_msg_new(&troupe__v1__address__descriptor, 0, (void **)&a);
    a->node = node;
    a->actor = actor;
    tr_msg_set_reply_to(m, (tr_actor_addr){0x1234567890abcdefull, 0x100000040ull});
    return m;
}

static tr_msg *
hello_msg(void)
{
    Troupe__V1__Hello *h;
    tr_msg *m = tr_msg_new(&troupe__v1__hello__descriptor, 128, (void **)&h);
    h->node = 77;
    h->listen_url = tr_msg_strdup(m, "ipc:///tmp/peer.sock");
    h->token = tr_msg_strdup(m, "t");
    h->version = 2;
    h->echo_url = tr_msg_strdup(m, "");
    h->recv_max = 1 << 22;
    return m;
}

static tr_msg *
node_chain(size_t levels)
{
    Trtest__Node *n;
    tr_msg *m = tr_msg_new(&trtest__node__descriptor, 0, (void **)&n);
    for (size_t l = 1; l < levels; l++) {
        n->child = tr_msg_arena(m, sizeof *n->child);
        trtest__node__init(n->child);
        n = n->child;
    }
    return m;
}

// seed fills buf with frame number i and returns its length.
static size_t
seed(int i, uint8_t *buf, size_t cap)
{
    size_t at = 0;
    switch (i) {
    case 0: // one record, the bench's request
        record(buf, cap, &at, 5, address_msg(5, 123456));
        break;
    case 1: // a link's first frame: Hello, then two more
        record(buf, cap, &at, 0, hello_msg());
        record(buf, cap, &at, 9, address_msg(1, 2));
        record(buf, cap, &at, 9, address_msg(3, 4));
        break;
    case 2: // past the depth limit, then a good one
        record(buf, cap, &at, 7, node_chain(TR_UNPACK_MAX_DEPTH + 1));
        record(buf, cap, &at, 7, address_msg(0, 1));
        break;
    case 3: // a record cut short
        record(buf, cap, &at, 5, address_msg(5, 6));
        record(buf, cap, &at, 5, address_msg(7, 8));
        at -= 3;
        break;
    default: // an empty envelope
        tra_rec_header(buf, 1, 0);
        at = TRA_REC_HDR;
        break;
    }
    return at;
}

static const char *
done(void)
{
    static char text[160];
    tr_unpack_stats st;
    tr_unpack_stats_get(&st);
    snprintf(text, sizeof text, "%llu envelopes unpacked, %llu malformed, %llu too deep",
             (unsigned long long)st.unpacked, (unsigned long long)st.malformed,
             (unsigned long long)st.too_deep);
    return text;
}

int
main(int argc, char **argv)
{
    const fuzz_replay r = {"frame", seed, 5, 20000, done};
    return fuzz_replay_main(argc, argv, &r);
}

#endif

// fuzz_envelope.c: the envelope decoder, as a remote peer reaches it: bytes
// off a socket go to tr_msg_unpack with the test types registered (among
// them a recursive one, for the depth limit). Every input must be refused
// cleanly (an error that agrees with the reason, no message, nothing
// held in flight) or decode into a message that packs, unpacks again and
// packs to the same bytes; no crash, no leak.
//
// Built two ways. With clang and -DTR_FUZZ=ON: a libFuzzer target
// (`fuzz_envelope corpus/`). Always: a replay driver (the same
// LLVMFuzzerTestOneInput under a main of ours) that runs the files named on
// its command line, or, given none, a fixed set of seeds and a bounded
// number of deterministic mutations of them; ctest runs it that way
// (fuzz.envelope; fuzz_replay.h), under ASan in CI. `--write-seeds DIR` writes the seeds
// as files, the corpus .ci/run starts libFuzzer from.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <troupe/envelope.h>
#include <troupe/v1/executor.pb-c.h>

#include "fuzz_unpack.h"

// check_refusal: the error and the reason agree, and nothing is left over.
static void
check_refusal(tr_err rv, const tr_msg *m, const tr_unpack_info *info)
{
    static const tr_err want[] = {
        [TR_UNPACK_MALFORMED] = TR_EINVAL, [TR_UNPACK_UNKNOWN] = TR_ENOTFOUND,
        [TR_UNPACK_TOO_DEEP] = TR_ETOOBIG, [TR_UNPACK_OVER_BUDGET] = TR_ETOOBIG,
        [TR_UNPACK_OVER_CAP] = TR_ENOMEM,
    };
    if (m != NULL || info->reason == TR_UNPACK_OK || (unsigned)info->reason > TR_UNPACK_OVER_CAP ||
        want[info->reason] != rv || memchr(info->type, '\0', sizeof info->type) == NULL) {
        fprintf(stderr, "fuzz_envelope: %s with reason %d\n", tr_strerror(rv), (int)info->reason);
        abort();
    }
}

// repack packs m; the caller frees the bytes.
static uint8_t *
repack(const tr_msg *m, size_t *len)
{
    *len = tr_msg_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    if (*len == 0 || tr_msg_pack_to(m, buf) != *len) {
        abort();
    }
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_register_test_types();
    tr_msg *m;
    tr_unpack_info info;
    tr_err rv = tr_msg_unpack(data, size, NULL, &m, &info);
    if (rv != TR_OK) {
        check_refusal(rv, m, &info);
    } else {
        // What decoded packs, decodes again (a generous budget: the packed
        // form of repeated scalars is shorter than what came in) and packs
        // to the same bytes.
        size_t n1, n2;
        uint8_t *b1 = repack(m, &n1);
        tr_unpack_limits lim = {.budget_factor = 1024};
        tr_msg *m2;
        if (tr_msg_unpack(b1, n1, &lim, &m2, &info) != TR_OK ||
            tr_msg_descriptor(m2) != tr_msg_descriptor(m) ||
            tr_msg_correlation(m2) != tr_msg_correlation(m) ||
            tr_msg_priority(m2) != tr_msg_priority(m)) {
            fprintf(stderr, "fuzz_envelope: a decoded message does not round-trip\n");
            abort();
        }
        uint8_t *b2 = repack(m2, &n2);
        if (n1 != n2 || memcmp(b1, b2, n1) != 0) {
            fprintf(stderr, "fuzz_envelope: packing is not stable\n");
            abort();
        }
        free(b2);
        free(b1);
        tr_msg_free(m2);
        tr_msg_free(m);
    }
    fuzz_check_nothing_in_flight("fuzz_envelope");
    return 0;
}

#ifndef TR_LIBFUZZER

// ---------------------------------------------------------------------------
// The replay driver (fuzz_replay.h).

#include "fuzz_replay.h"

// node_chain builds a Node body levels deep in m's arena.
static void
node_chain(tr_msg *m, Trtest__Node *n, size_t levels)
{
    for (size_t l = 1; l < levels; l++) {
        n->child = tr_msg_arena(m, sizeof *n->child);
        trtest__node__init(n->child);
        n = n->child;
    }
    n->pad.data = tr_msg_memdup(m, "pad", 3);
    n->pad.len = 3;
}

// seed_msg builds the message of seed number i.
static tr_msg *
seed_msg(int i)
{
    tr_msg *m;
    switch (i) {
    case 0: {
        Troupe__V1__Down *d;
        m = tr_msg_new(&troupe__v1__down__descriptor, 128, (void **)&d);
        d->ref = 99;
        d->actor = tr_msg_arena(m, sizeof *d->actor);
        troupe__v1__address__init(d->actor);
        d->actor->node = 2;
        d->actor->actor = 1u << 20;
        d->reason = tr_msg_arena(m, sizeof *d->reason);
        troupe__v1__reason__init(d->reason);
        d->reason->code = TR_ETIMEDOUT;
        d->reason->text = tr_msg_strdup(m, "timed out");
        tr_msg_set_reply_to(m, (tr_actor_addr){3, 4});
        tr_msg_set_priority(m, 1);
        break;
    }
    case 1: {
        Trtest__Sample *s;
        m = tr_msg_new(&trtest__sample__descriptor, 512, (void **)&s);
        s->name = tr_msg_strdup(m, "seed");
        s->data.data = tr_msg_memdup(m, "\x00\x01\x02", 3);
        s->data.len = 3;
        s->n_tags = 2;
        s->tags = tr_msg_arena(m, 2 * sizeof(char *));
        s->tags[0] = tr_msg_strdup(m, "t0");
        s->tags[1] = tr_msg_strdup(m, "");
        s->n_nums = 3;
        s->nums = tr_msg_arena(m, 3 * sizeof(uint32_t));
        s->nums[0] = 1;
        s->nums[1] = 300;
        s->nums[2] = 70000;
        s->n_peers = 1;
        s->peers = tr_msg_arena(m, sizeof(*s->peers));
        s->peers[0] = tr_msg_arena(m, sizeof(Troupe__V1__Address));
        troupe__v1__address__init(s->peers[0]);
        s->peers[0]->actor = 5;
        s->n_attrs = 1;
        s->attrs = tr_msg_arena(m, sizeof(*s->attrs));
        s->attrs[0] = tr_msg_arena(m, sizeof(Trtest__Sample__AttrsEntry));
        trtest__sample__attrs_entry__init(s->attrs[0]);
        s->attrs[0]->key = tr_msg_strdup(m, "k");
        s->pick_case = TRTEST__SAMPLE__PICK_NODE;
        s->node = tr_msg_arena(m, sizeof(Trtest__Node));
        trtest__node__init(s->node);
        node_chain(m, s->node, 3);
        s->delta = -7;
        s->ratio = 1.0;
        s->flag = true;
        s->f32 = 7;
        s->color = TRTEST__SAMPLE__COLOR__COLOR_BLUE;
        s->weight = 2.0f;
        s->sf64 = -2;
        break;
    }
    case 2:
    case 3: {
        // At the depth limit, and one past it (refused).
        Trtest__Node *n;
        m = tr_msg_new(&trtest__node__descriptor, 0, (void **)&n);
        node_chain(m, n, i == 2 ? TR_UNPACK_MAX_DEPTH : TR_UNPACK_MAX_DEPTH + 1);
        break;
    }
    case 4: {
        Troupe__V1__ExecutorCommand *c;
        m = tr_msg_new(&troupe__v1__executor_command__descriptor, 256, (void **)&c);
        c->correlation_id = 1000;
        c->command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
        c->spawn = tr_msg_arena(m, sizeof *c->spawn);
        troupe__v1__spawn__init(c->spawn);
        c->spawn->task_case = TROUPE__V1__SPAWN__TASK_SPEC;
        c->spawn->spec = tr_msg_arena(m, sizeof *c->spawn->spec);
        troupe__v1__task_spec__init(c->spawn->spec);
        c->spawn->spec->kind = tr_msg_strdup(m, "sum");
        break;
    }
    default:
        m = tr_msg_new(&troupe__v1__address__descriptor, 0, NULL);
        break;
    }
    return m;
}

// seed fills buf with seed number i and returns its length.
static size_t
seed(int i, uint8_t *buf, size_t cap)
{
    tr_msg *m = seed_msg(i);
    size_t n = tr_msg_packed_size(m);
    if (n > cap) {
        abort();
    }
    n = tr_msg_pack_to(m, buf);
    tr_msg_free(m);
    if (i == 5) {
        buf[2] ^= 0x20; // a type nobody registered ("Troupe.v1.Address")
    }
    return n;
}

static const char *
done(void)
{
    static char text[160];
    tr_unpack_stats st;
    tr_unpack_stats_get(&st);
    snprintf(text, sizeof text, "%llu unpacked, %llu unknown, %llu malformed, %llu too deep",
             (unsigned long long)st.unpacked, (unsigned long long)st.unknown,
             (unsigned long long)st.malformed, (unsigned long long)st.too_deep);
    return text;
}

int
main(int argc, char **argv)
{
    const fuzz_replay r = {"envelope", seed, 6, 20000, done};
    return fuzz_replay_main(argc, argv, &r);
}

#endif

// fuzz_workload.c: the workload file parser (daemon/workload.h), as
// `troupe run FILE` reaches it: any bytes, YAML or JSON or neither. Every
// input must be refused cleanly (TR_EINVAL or TR_ETOOBIG, no message, a
// position of 1 or more and a non-empty text in the diag) or parse into a
// batch whose job_count is its number of jobs, within the limits, that
// packs, unpacks and packs to the same bytes; no crash, no leak.
//
// Built two ways, as every harness here (fuzz_replay.h): a libFuzzer
// target with clang and -DTR_FUZZ=ON (`fuzz_workload corpus/`), and always
// a replay driver that ctest runs over the seeds below and a bounded number
// of deterministic mutations of them (fuzz.workload).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workload.h"

static void
check_batch(tr_msg *m)
{
    Troupe__V1__SubmitBatch *b = tr_msg_body(m);
    if (!tr_msg_is(m, &troupe__v1__submit_batch__descriptor) || b->n_jobs == 0 ||
        b->job_count != b->n_jobs || b->n_jobs > TRD_WL_MAX_JOBS) {
        fprintf(stderr, "fuzz_workload: a parsed batch is malformed\n");
        abort();
    }
    size_t n1 = troupe__v1__submit_batch__get_packed_size(b);
    uint8_t *b1 = malloc(n1 + 1);
    if (b1 == NULL || troupe__v1__submit_batch__pack(b, b1) != n1) {
        abort();
    }
    Troupe__V1__SubmitBatch *u = troupe__v1__submit_batch__unpack(NULL, n1, b1);
    if (u == NULL || u->job_count != b->job_count || u->n_jobs != b->n_jobs) {
        fprintf(stderr, "fuzz_workload: a parsed batch does not unpack\n");
        abort();
    }
    size_t n2 = troupe__v1__submit_batch__get_packed_size(u);
    uint8_t *b2 = malloc(n2 + 1);
    if (b2 == NULL || troupe__v1__submit_batch__pack(u, b2) != n2 || n1 != n2 ||
        memcmp(b1, b2, n1) != 0) {
        fprintf(stderr, "fuzz_workload: packing is not stable\n");
        abort();
    }
    troupe__v1__submit_batch__free_unpacked(u, NULL);
    free(b2);
    free(b1);
}

static size_t parsed, refused;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tr_msg *m;
    trd_diag d;
    tr_err rv = trd_workload_parse((const char *)data, size, &m, &d);
    if (rv == TR_OK) {
        check_batch(m);
        tr_msg_free(m);
        parsed++;
        return 0;
    }
    if (m != NULL || (rv != TR_EINVAL && rv != TR_ETOOBIG) || d.line == 0 || d.column == 0 ||
        memchr(d.msg, '\0', sizeof d.msg) == NULL || d.msg[0] == '\0') {
        fprintf(stderr, "fuzz_workload: a bad refusal: %s at %u:%u: %.255s\n", tr_strerror(rv),
                d.line, d.column, d.msg);
        abort();
    }
    refused++;
    return 0;
}

#ifndef TR_LIBFUZZER

// ---------------------------------------------------------------------------
// The replay driver (fuzz_replay.h).

#include "fuzz_replay.h"

static const char *const seeds[] = {
    ("version: 1\n"
     "groups:\n"
     "  build: {parallel: 2}\n"
     "defaults:\n"
     "  group: build\n"
     "  timeout: 10m\n"
     "  env: {A: '1'}\n"
     "jobs:\n"
     "  - name: fetch\n"
     "    exec: [curl, -O, x]\n"
     "  - name: compile\n"
     "    run: make -j2\n"
     "    after: [fetch]\n"
     "    replicas: 3\n"
     "    retries: 2\n"
     "    backoff: 1.5s\n"
     "    backoff_max: 30s\n"
     "    kill_grace: 5s\n"
     "  - name: test\n"
     "    after: compile\n"
     "    on_dep_failure: skip\n"
     "    sleep: 250ms\n"
     "    priority: -3\n"
     "    slots: 2\n"
     "    stdin: \"a\\0b\"\n"
     "    cwd: /tmp\n"
     "    labels: {team: infra}\n"
     "    rlimits: {nofile: 1024, core: {soft: 0, hard: 0}, stack: unlimited}\n"
     "  - noop: true\n"
     "    after: [test, compile]\n"),

    ("{\"version\": 1, \"groups\": {\"g\": {\"parallel\": 0}},\n"
     " \"jobs\": [{\"name\": \"a\", \"run\": \"true\", \"replicas\": 2},\n"
     "          {\"name\": \"b\", \"exec\": [\"ls\", \"-l\"], \"after\": [\"a\"],\n"
     "           \"env\": {\"K\": \"v\"}, \"timeout\": 1000}]}\n"),

    ("jobs:\n"
     "  - {name: a, noop: true, after: c}\n"
     "  - {name: b, noop: true, after: a}\n"
     "  - {name: c, noop: true, after: b}\n"),

    ("jobs:\n  - &x {noop: true}\n  - *x\n"),

    ("jobs: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n"),

    ("jobs:\n  - run: |\n      echo one\n      echo two\n    timeout: 1h30m\n---\njobs: []\n"),

    ("defaults: {run: x, noop: true}\njobs:\n  - {name: 'x[0]', noop: true}\n"
     "  - {name: x, replicas: 2, sleep: 2s}\n"),
};

static size_t
seed(int i, uint8_t *buf, size_t cap)
{
    size_t n = strlen(seeds[i]);
    if (n > cap) {
        abort();
    }
    memcpy(buf, seeds[i], n);
    return n;
}

static const char *
done(void)
{
    static char text[96];
    snprintf(text, sizeof text, "%zu parsed, %zu refused", parsed, refused);
    return text;
}

int
main(int argc, char **argv)
{
    const fuzz_replay r = {"workload", seed, (int)(sizeof seeds / sizeof seeds[0]), 20000, done};
    return fuzz_replay_main(argc, argv, &r);
}

#endif
